/**
 * Messages of issue 14 (partial accept), declared once for both sides like ./protocol — kept in a file of their own
 * until ./protocol moves to the shared protocol project, where they belong.
 */
import { NotificationType } from 'vscode-languageserver-protocol';

export interface PartialAcceptParams {
  uri: string;
  /** The document's version with the accepted text inserted. */
  version: number;
  /** The cursor after the accepted text (UTF-16 offset). */
  offset: number;
  /** What was accepted of the shown suggestion. */
  acceptedText: string;
  kind: 'word' | 'line';
}

/**
 * client → server: the user accepted the start of the shown suggestion (editor.action.inlineSuggest.acceptNextWord /
 * acceptNextLine); the rest is served from the cache at the new cursor and the prefetch of accepting all of it goes on.
 */
export const PartialAcceptNotification = new NotificationType<PartialAcceptParams>('mixq/didPartiallyAccept');
