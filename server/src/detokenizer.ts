/**
 * Incremental detokenization: turns a stream of token ids into text chunks as they arrive, never emitting
 * half a character.
 *
 * Exported API:
 *
 *   const detok = new IncrementalDetokenizer(tokenizer, { skipSpecialTokens: true });
 *   for (const id of stream) sink(detok.push(id));   // '' while a character is incomplete
 *   sink(detok.flush());                              // the rest, once the stream has ended
 *   detok.text                                        // everything emitted so far
 *
 * Guarantee: the concatenation of all chunks (push… + flush) equals tokenizer.decode(allIds, same options).
 *
 * How: text is emitted only at token boundaries where the decoded text is final, i.e.
 *   1. the last id is not a byte-fallback token (`<0xNN>`): a run of byte tokens is decoded as a whole
 *      (invalid UTF-8 anywhere in the run turns every byte of it into U+FFFD), so it is final only once a
 *      non-byte token closes it;
 *   2. the decoded window does not end in U+FFFD (tokenizers whose tokens carry partial UTF-8 bytes
 *      themselves, e.g. byte-level BPE, decode an incomplete character that way);
 *   3. the newly decoded window starts with the text already emitted for it (decoders that strip or merge
 *      across token boundaries are handled by decoding a window that starts one chunk back, so the new
 *      text is read in context).
 *
 * Cost: each push decodes only the window (the last emitted chunk's ids + those since), never the whole stream,
 * so streaming n tokens decodes O(n) ids in all (the text of the chunk before the window is decoded once per
 * chunk, not once per push). A window grows only over ids that give no final text yet (an incomplete character,
 * skipped special tokens).
 */
import type { DecodeOptions } from './tokenizer';

/** What the detokenizer needs of a tokenizer (MixqTokenizer; the completion model's view of it). */
export interface Detokenizable {
  decode(ids: readonly number[], options?: DecodeOptions): string;
  isByteFallback(id: number): boolean;
}

export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  /** Start of the decode window: the ids of the last emitted chunk serve as context. */
  private prefixOffset = 0;
  /** Ids before this index have been emitted. */
  private readOffset = 0;
  private emitted = '';
  /** decode(ids[prefixOffset, readOffset)), once per chunk. */
  private before: string | undefined;

  constructor(
    private readonly tokenizer: Detokenizable,
    private readonly options: DecodeOptions = {},
  ) {}

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }

  /** All ids pushed so far. */
  get tokens(): readonly number[] {
    return this.ids;
  }

  /** Adds one token id; returns the text that became final (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    if (this.tokenizer.isByteFallback(id)) return '';
    return this.advance(false);
  }

  /** Emits whatever is held back (the stream has ended). Further pushes continue from here. */
  flush(): string {
    return this.advance(true);
  }

  private advance(final: boolean): string {
    if (this.readOffset === this.ids.length) return '';
    const before = (this.before ??= this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.options));
    const window = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.options);
    if (!final) {
      if (window.length <= before.length || window.endsWith('\uFFFD') || !window.startsWith(before)) return '';
    }
    // On flush a window that does not extend `before` (no decoder of this model does that) still gives its
    // tail, so nothing is lost.
    const chunk = window.startsWith(before) ? window.slice(before.length) : window.slice(Math.min(before.length, window.length));
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.before = undefined;
    this.emitted += chunk;
    return chunk;
  }
}
