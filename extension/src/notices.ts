/**
 * Shows ./noticeState's notices. VS Code cannot close a notification from showInformationMessage, so each notice is
 * a progress notification whose task ends when the notice is replaced or cleared: then it disappears by itself.
 * Its Cancel button is the user's close; actions are command links in its text (progress notifications take no
 * buttons).
 */
import * as vscode from 'vscode';

import type { ServerStatus } from '#protocol';
import { modelNotice, NoticeState } from './noticeState';

export class ModelNotices implements vscode.Disposable {
  private readonly state = new NoticeState();
  private closeShown: (() => void) | undefined;

  constructor(private readonly log: vscode.LogOutputChannel) {}

  update(status: ServerStatus | undefined): void {
    const change = this.state.next(modelNotice(status));
    if (change.close) this.close();
    const notice = change.show;
    if (!notice) return;
    const plain = notice.message.replace(/\[([^\]]*)\]\(command:[^)]*\)/g, '$1');
    if (notice.severity === 'error') this.log.error(plain);
    else this.log.info(plain);
    void vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: notice.message, cancellable: true },
      (progress, token) =>
        new Promise<void>((resolve) => {
          progress.report({ increment: 100 }); // a full bar: nothing is in progress, it is a notice
          this.closeShown = resolve;
          token.onCancellationRequested(() => {
            this.state.dismissed(notice.key);
            resolve();
          });
        }),
    );
  }

  private close(): void {
    const close = this.closeShown;
    this.closeShown = undefined;
    close?.();
  }

  dispose(): void {
    this.close();
  }
}
