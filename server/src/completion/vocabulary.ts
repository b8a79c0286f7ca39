/**
 * Facts about a tokenizer's vocabulary that the completion pipeline needs, found in one pass over the ids when a
 * model loads: which known FIM/stop markers it has (./templates) and how long its longest ordinary piece is (bounds
 * the text a token budget can use, ./window). The language server computes them on the tokenizer's own thread
 * (../tokenizerThread), so a large vocabulary is not walked on the event loop.
 */
import type { Tokenizer } from '../tokenizer';
import { KNOWN_MARKER_NAMES } from './templates';

export interface VocabularyFacts {
  /** Known marker name → id, for the markers in the vocabulary. */
  markers: Map<string, number>;
  /** Characters of the longest piece that is neither byte fallback nor special (at least 1). */
  longestPiece: number;
}

type VocabularyView = Pick<Tokenizer, 'vocabSize' | 'tokenText' | 'isByteFallback' | 'isSpecial'>;

/** Finds the known FIM/stop marker names in a tokenizer's vocabulary (one pass over the ids). */
export function scanMarkers(tokenizer: VocabularyView): Map<string, number> {
  const markers = new Map<string, number>();
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    const t = tokenizer.tokenText(id);
    if (t !== undefined && KNOWN_MARKER_NAMES.has(t) && !markers.has(t)) markers.set(t, id);
  }
  return markers;
}

/** Characters of the longest ordinary piece of the vocabulary (byte-fallback and special tokens excluded). */
export function longestPiece(tokenizer: VocabularyView): number {
  let longest = 1;
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    if (tokenizer.isByteFallback(id) || tokenizer.isSpecial(id)) continue;
    const t = tokenizer.tokenText(id);
    if (t !== undefined && t.length > longest) longest = t.length;
  }
  return longest;
}

export function vocabularyFacts(tokenizer: VocabularyView): VocabularyFacts {
  return { markers: scanMarkers(tokenizer), longestPiece: longestPiece(tokenizer) };
}
