/**
 * What the user does with suggestions: accept a word / a line (our keybindings run these commands, which run VS
 * Code's own and tell the server what was accepted), accept all (the item's command), and the local statistics
 * (./stats) those feed, with the MixQ: Show Statistics command.
 */
import * as vscode from 'vscode';

import { PartialAcceptNotification } from '#protocol';
import type { CompletionObserver, Ctx } from './ctx';
import { CompletionStats, insertedAt } from './stats';

type Command = (...args: unknown[]) => unknown;

export const STATS_KEY = 'mixq.statistics';
export const DID_ACCEPT_COMMAND = 'mixq.didAcceptCompletion';

export function createStats(context: vscode.ExtensionContext): CompletionStats {
  return new CompletionStats(context.globalState.get(STATS_KEY), (data) => void context.globalState.update(STATS_KEY, data));
}

/** Counts shown suggestions and makes each item report its acceptance. */
export function statsObserver(stats: CompletionStats): CompletionObserver {
  return (document, position, result, latencyMs) => {
    const items = Array.isArray(result) ? result : result?.items ?? [];
    const first = items[0];
    const text = first ? (typeof first.insertText === 'string' ? first.insertText : first.insertText.value) : undefined;
    for (const item of items) item.command ??= { command: DID_ACCEPT_COMMAND, title: 'MixQ: accepted', arguments: [document.languageId] };
    stats.answered(document.uri.toString(), document.languageId, document.offsetAt(position), text || undefined, latencyMs, document.getText());
  };
}

export function didAccept(stats: CompletionStats): Command {
  return (languageId: unknown) => stats.accepted(typeof languageId === 'string' ? languageId : 'unknown');
}

/** Runs VS Code's accept-next-word/line; when it inserted text, counts it and tells the server. */
export function acceptPartially(ctx: Ctx, stats: CompletionStats, kind: 'word' | 'line'): Command {
  return async () => {
    const editor = vscode.window.activeTextEditor;
    const builtin = kind === 'word' ? 'editor.action.inlineSuggest.acceptNextWord' : 'editor.action.inlineSuggest.acceptNextLine';
    if (!editor) return vscode.commands.executeCommand(builtin);
    const document = editor.document;
    const before = document.getText();
    const offset = document.offsetAt(editor.selection.active);
    await vscode.commands.executeCommand(builtin);
    const accepted = insertedAt(before, document.getText(), offset);
    if (accepted === undefined) return;
    stats.partiallyAccepted(document.languageId);
    if (ctx.running) {
      void ctx.client?.sendNotification(PartialAcceptNotification, {
        uri: document.uri.toString(), version: document.version, offset: offset + accepted.length, acceptedText: accepted, kind,
      });
    }
  };
}

export function showStatistics(stats: CompletionStats): Command {
  return async () => {
    const doc = await vscode.workspace.openTextDocument({ language: 'markdown', content: stats.report() });
    await vscode.window.showTextDocument(doc, { preview: true });
  };
}

export function resetStatistics(stats: CompletionStats): Command {
  return async () => {
    const pick = await vscode.window.showWarningMessage('MixQ: reset the local completion statistics?', { modal: true }, 'Reset');
    if (pick === 'Reset') stats.reset();
  };
}
