/**
 * Context from other places than the current document: the extension point, and one implementation that picks
 * the chunks of other open documents most similar to the code around the cursor.
 */

/** The document being completed, as the prompt builder sees it. */
export interface CompletionDocument {
  uri: string;
  languageId: string;
  text: string;
  /** Cursor offset in `text` (UTF-16 code units). */
  offset: number;
  /** Offset of `text` in the whole document when `text` is a window of it (./window); absent: 0. */
  windowStart?: number;
}

export interface ContextSnippet {
  /** Where it comes from, shown to the model in a comment: a path relative to the workspace, or a URI. */
  label: string;
  text: string;
  /** Higher is more relevant; snippets are taken in descending score until the budget is spent. */
  score: number;
}

/**
 * A source of snippets (other open files, recently edited places, a symbol index, …). Called once per request
 * that reaches the model; must be fast (no I/O on the hot path) and deterministic for the same state, so that the
 * prompt — and with it the engine's KV cache — stays stable while the user types.
 */
export interface ContextProvider {
  readonly name: string;
  snippets(doc: CompletionDocument, maxChars: number): ContextSnippet[];
}

/** Identifier-like words of a text (the bag compared by Jaccard similarity). */
export function wordSet(text: string): Set<string> {
  const words = new Set<string>();
  for (const m of text.matchAll(/[A-Za-z_][A-Za-z0-9_]*/g)) words.add(m[0]);
  return words;
}

export function jaccard(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  if (a.size === 0 && b.size === 0) return 0;
  let inter = 0;
  for (const w of a) if (b.has(w)) inter++;
  return inter / (a.size + b.size - inter);
}

export interface OpenDocumentsSource {
  /** Documents to take snippets from (the server's TextDocuments, recently closed ones). */
  all(): Array<{ uri: string; languageId: string; getText(): string }>;
}

/**
 * Documents closed recently (newest first, at most `capacity`), so their code still serves as context: the user
 * often completes code that uses what they just looked at.
 */
export class RecentDocuments implements OpenDocumentsSource {
  private readonly docs: Array<{ uri: string; languageId: string; text: string }> = [];

  constructor(readonly capacity = 8) {}

  remember(doc: { uri: string; languageId: string; getText(): string }): void {
    this.forget(doc.uri);
    // Only what the context search reads is kept (a closed 20 MB file must not stay in memory).
    const text = doc.getText().slice(0, OpenFilesContextProvider.MAX_OTHER_DOC_CHARS);
    this.docs.unshift({ uri: doc.uri, languageId: doc.languageId, text });
    this.docs.length = Math.min(this.docs.length, this.capacity);
  }

  /** A reopened document is served by the open documents again. */
  forget(uri: string): void {
    const i = this.docs.findIndex((d) => d.uri === uri);
    if (i >= 0) this.docs.splice(i, 1);
  }

  all(): Array<{ uri: string; languageId: string; getText(): string }> {
    return this.docs.map((d) => ({ uri: d.uri, languageId: d.languageId, getText: () => d.text }));
  }
}

/** Several sources as one (e.g. open + recently closed documents). */
export function combinedSources(...sources: OpenDocumentsSource[]): OpenDocumentsSource {
  return { all: () => sources.flatMap((s) => s.all()) };
}

/**
 * Chunks (CHUNK_LINES lines, overlapping by half) of other documents of the same language, scored by Jaccard
 * similarity of their identifiers with the last QUERY_LINES lines before the cursor. Chunks scoring under
 * MIN_SCORE are noise for a small model and are left out.
 */
export class OpenFilesContextProvider implements ContextProvider {
  readonly name = 'open-files';
  static readonly CHUNK_LINES = 16;
  static readonly QUERY_LINES = 24;
  static readonly MIN_SCORE = 0.2;
  static readonly MAX_SNIPPETS = 3;
  /** Characters of another document searched (its start); bounds the per-request cost of huge open files. */
  static readonly MAX_OTHER_DOC_CHARS = 256 * 1024;

  constructor(private readonly documents: OpenDocumentsSource, private readonly relativeLabel: (uri: string) => string = (u) => u) {}

  snippets(doc: CompletionDocument, maxChars: number): ContextSnippet[] {
    if (maxChars <= 0) return [];
    // The query: the last QUERY_LINES lines (of a bounded tail, however long the lines are).
    const before = doc.text.slice(Math.max(0, doc.offset - 64 * 1024), doc.offset).split('\n');
    const query = wordSet(before.slice(-OpenFilesContextProvider.QUERY_LINES).join('\n'));
    if (query.size === 0) return [];
    const candidates: ContextSnippet[] = [];
    for (const other of this.documents.all()) {
      if (other.uri === doc.uri || other.languageId !== doc.languageId) continue;
      // A huge open file is searched only in its first MAX_OTHER_DOC_CHARS: the search runs for every request.
      const lines = other.getText().slice(0, OpenFilesContextProvider.MAX_OTHER_DOC_CHARS).split('\n');
      const step = OpenFilesContextProvider.CHUNK_LINES / 2;
      for (let start = 0; start < lines.length; start += step) {
        const text = lines.slice(start, start + OpenFilesContextProvider.CHUNK_LINES).join('\n').trimEnd();
        if (text.trim().length === 0) continue;
        const score = jaccard(query, wordSet(text));
        if (score >= OpenFilesContextProvider.MIN_SCORE) candidates.push({ label: this.relativeLabel(other.uri), text, score });
        if (start + OpenFilesContextProvider.CHUNK_LINES >= lines.length) break;
      }
    }
    // Stable order for equal scores (label, then text) keeps the prompt identical between keystrokes.
    candidates.sort((a, b) => b.score - a.score || a.label.localeCompare(b.label) || a.text.localeCompare(b.text));
    const picked: ContextSnippet[] = [];
    let used = 0;
    for (const c of candidates) {
      if (picked.length >= OpenFilesContextProvider.MAX_SNIPPETS) break;
      if (used + c.text.length > maxChars) continue;
      picked.push(c);
      used += c.text.length;
    }
    return picked;
  }
}

/** Line-comment marker for a VS Code language id (snippets are shown to the model as comments). */
export function lineComment(languageId: string): string {
  switch (languageId) {
    case 'python': case 'shellscript': case 'ruby': case 'perl': case 'r': case 'yaml': case 'toml':
    case 'makefile': case 'dockerfile': case 'powershell': case 'julia': case 'elixir': case 'coffeescript':
      return '#';
    case 'sql': case 'lua': case 'haskell':
      return '--';
    case 'clojure': case 'lisp': case 'scheme':
      return ';';
    default:
      return '//';
  }
}

/** The snippets as a comment block placed before the prefix. */
export function formatSnippets(snippets: ContextSnippet[], languageId: string): string {
  if (snippets.length === 0) return '';
  const c = lineComment(languageId);
  let out = '';
  for (const s of snippets) {
    out += `${c} Path: ${s.label}\n`;
    for (const line of s.text.split('\n')) out += `${c} ${line}\n`;
  }
  return out + '\n';
}
