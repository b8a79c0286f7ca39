/**
 * Which notification about the model's state should be on screen. One at a time: a new state replaces the notice of
 * the previous one, a state that needs none (loading, ready) clears it, and a notice the user closed stays closed
 * until the state changes. No vscode import: unit-tested in Node (./notices shows them).
 */
import type { ServerStatus } from '#protocol';

/** Notice texts may hold `[label](command:id)` links: VS Code renders them in notifications as clickable actions. */
export interface Notice {
  /** Same key: the same notice (kept on screen, not shown again). */
  key: string;
  severity: 'info' | 'error';
  message: string;
}

/** The notice a server status calls for, if any. */
export function modelNotice(status: ServerStatus | undefined): Notice | undefined {
  if (!status) return undefined;
  if (status.state === 'noModel') {
    return { key: 'noModel', severity: 'info', message: 'MixQ: no model configured. [Select Model…](command:mixq.selectModel) to get completions.' };
  }
  if (status.state === 'error') {
    const reason = status.message ?? 'the model failed to load';
    return {
      key: `error:${reason}`,
      severity: 'error',
      message: `MixQ: ${reason}. Completions are off. [Select Model…](command:mixq.selectModel) · [Show Log](command:mixq.showLog)`,
    };
  }
  return undefined;
}

export interface NoticeChange {
  /** Close the notice on screen. */
  close: boolean;
  /** Then show this one. */
  show?: Notice;
}

export class NoticeState {
  current: Notice | undefined;
  /** The key of the notice the user closed; it stays closed while its state lasts. */
  private dismissedKey: string | undefined;

  /** What to do for the notice the new state calls for. */
  next(notice: Notice | undefined): NoticeChange {
    if (notice?.key !== this.dismissedKey) this.dismissedKey = undefined; // its state ended
    if (notice !== undefined && notice.key === this.current?.key) return { close: false };
    const close = this.current !== undefined;
    this.current = undefined;
    if (!notice || notice.key === this.dismissedKey) return { close };
    this.current = notice;
    return { close, show: notice };
  }

  /** The user closed the notice on screen. */
  dismissed(key: string): void {
    if (this.current?.key !== key) return;
    this.current = undefined;
    this.dismissedKey = key;
  }
}
