/**
 * The tokenizer on a worker thread: reading, parsing and building tokenizer.json (seconds for a large one) never
 * run on the caller's event loop, and a load that takes too long is abandoned (the thread is terminated).
 *
 *   const tok = await ThreadTokenizer.load(modelDir, { timeoutMs });   // rejects with TokenizerError naming the file
 *   tok.encode(text) / decode(ids) / fimPrompt(…) / tokenText(id)      // ../tokenizer's Tokenizer, synchronous
 *   tok.isByteFallback(id) / isSpecial(id) / bosId / eosId / fim / vocabSize   // answered locally
 *   tok.facts                                                         // ./completion/vocabulary, found on the thread
 *   tok.dispose()                                                     // ends the thread
 *
 * The synchronous calls: the caller posts {seq, method, args} on a MessagePort and sleeps on a shared Int32Array
 * (Atomics.wait) until the thread has posted the reply and set the flag, then takes the reply off the port with
 * receiveMessageOnPort. A call costs tens of microseconds more than in-process; the windowed prompts and the
 * detokenizer's short windows keep the calls themselves short. A call not answered within CALL_TIMEOUT_MS ends the
 * thread and throws.
 *
 * serveTokenizer is the thread's side (run by ./worker).
 */
import * as path from 'node:path';
import { MessageChannel, parentPort, receiveMessageOnPort, type MessagePort, type Worker } from 'node:worker_threads';

import { vocabularyFacts, type VocabularyFacts } from './completion/vocabulary';
import { startWorker, threadFailure, type TokenizerTask } from './threads';
import { MixqTokenizer, TokenizerError, type DecodeOptions, type EncodeOptions, type FimMode, type FimTokens, type Tokenizer } from './tokenizer';

/** How long a load may take before it is abandoned (a 256 MiB tokenizer.json takes ~60 s on a slow CPU). */
export const TOKENIZER_LOAD_TIMEOUT_MS = 180_000;
const CALL_TIMEOUT_MS = 30_000;

type Method = 'encode' | 'decode' | 'fimPrompt' | 'tokenText';

interface CallRequest {
  seq: number;
  method: Method;
  args: unknown[];
}

type CallReply = { seq: number; ok: true; value: unknown } | { seq: number; ok: false; error: string };

/** What the thread sends once the tokenizer is built. */
interface ReadyMessage {
  type: 'ready';
  bosId: number | undefined;
  eosId: number;
  unkId: number | undefined;
  fim: FimTokens | undefined;
  vocabSize: number;
  byteFallback: Uint8Array;  // [vocabSize], 1 for `<0xNN>` ids
  specialIds: number[];
  markers: Array<[string, number]>;
  longestPiece: number;
}

type LoadMessage = ReadyMessage | { type: 'error'; message: string };

export interface ThreadTokenizerOptions {
  /** Abandon the load after this long (default TOKENIZER_LOAD_TIMEOUT_MS). */
  timeoutMs?: number;
}

export class ThreadTokenizer implements Tokenizer {
  readonly bosId: number | undefined;
  readonly eosId: number;
  readonly unkId: number | undefined;
  readonly fim: FimTokens | undefined;
  readonly vocabSize: number;
  readonly facts: VocabularyFacts;
  private readonly byteFallback: Uint8Array;
  private readonly specialIds: Set<number>;
  private seq = 0;
  private closed = false;

  private constructor(
    ready: ReadyMessage,
    private readonly worker: Worker,
    private readonly port: MessagePort,
    private readonly signal: Int32Array,
    private readonly jsonPath: string,
  ) {
    this.bosId = ready.bosId;
    this.eosId = ready.eosId;
    this.unkId = ready.unkId;
    this.fim = ready.fim;
    this.vocabSize = ready.vocabSize;
    this.byteFallback = ready.byteFallback;
    this.specialIds = new Set(ready.specialIds);
    this.facts = { markers: new Map(ready.markers), longestPiece: ready.longestPiece };
  }

  /** Loads DIR/tokenizer.json (+ tokenizer_config.json) on a new thread; see MixqTokenizer.load for the checks. */
  static load(modelDir: string, options: ThreadTokenizerOptions = {}): Promise<ThreadTokenizer> {
    const timeoutMs = options.timeoutMs ?? TOKENIZER_LOAD_TIMEOUT_MS;
    const jsonPath = path.join(modelDir, 'tokenizer.json');
    const { port1, port2 } = new MessageChannel();
    const signal = new Int32Array(new SharedArrayBuffer(4));
    const worker = startWorker({ task: 'tokenizer', modelDir, port: port2, signal }, [port2]);
    return new Promise<ThreadTokenizer>((resolve, reject) => {
      let settled = false;
      const fail = (message: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        port1.close();
        void worker.terminate();
        reject(new TokenizerError(message));
      };
      const timer = setTimeout(() => fail(`${jsonPath}: loading the tokenizer took longer than ${timeoutMs / 1000} s; abandoned`), timeoutMs);
      worker.once('message', (m: LoadMessage) => {
        if (m.type === 'error') return fail(m.message);
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        worker.removeAllListeners('error');
        worker.removeAllListeners('exit');
        worker.unref();  // from here it only answers synchronous calls
        resolve(new ThreadTokenizer(m, worker, port1, signal, jsonPath));
      });
      worker.once('error', (e) => fail(`${jsonPath}: the tokenizer thread ${threadFailure(e)}`));
      worker.once('exit', (code) => fail(`${jsonPath}: the tokenizer thread ended (exit code ${code}) before the tokenizer was built`));
    });
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (text.length === 0 && options.addSpecialTokens === false) return [];
    return this.call('encode', [text, options]) as number[];
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    return this.call('decode', [ids, options]) as string;
  }

  fimPrompt(prefix: string, suffix: string, mode: FimMode = 'spm'): number[] {
    return this.call('fimPrompt', [prefix, suffix, mode]) as number[];
  }

  tokenText(id: number): string | undefined {
    return this.call('tokenText', [id]) as string | undefined;
  }

  isByteFallback(id: number): boolean {
    return this.byteFallback[id] === 1;
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** Ends the thread; later calls throw. */
  async dispose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.port.close();
    await this.worker.terminate();
  }

  private call(method: Method, args: unknown[]): unknown {
    if (this.closed) throw new TokenizerError(`${this.jsonPath}: the tokenizer was disposed`);
    const seq = ++this.seq;
    Atomics.store(this.signal, 0, 0);
    this.port.postMessage({ seq, method, args } satisfies CallRequest);
    const deadline = Date.now() + CALL_TIMEOUT_MS;
    for (;;) {
      Atomics.wait(this.signal, 0, 0, Math.max(0, deadline - Date.now()));
      const got = receiveMessageOnPort(this.port);
      const reply = got?.message as CallReply | undefined;
      if (reply?.seq === seq) {
        if (!reply.ok) throw new TokenizerError(reply.error);
        return reply.value;
      }
      if (Date.now() >= deadline) {
        void this.dispose();
        throw new TokenizerError(`${this.jsonPath}: the tokenizer thread did not answer ${method} within ${CALL_TIMEOUT_MS / 1000} s`);
      }
    }
  }
}

/** The thread's side: builds the tokenizer, reports it (or the error), then answers calls until terminated. */
export function serveTokenizer(task: TokenizerTask): void {
  let tokenizer: MixqTokenizer;
  try {
    tokenizer = MixqTokenizer.load(task.modelDir);
  } catch (e) {
    parentPort!.postMessage({ type: 'error', message: (e as Error).message } satisfies LoadMessage);
    return;
  }
  const byteFallback = new Uint8Array(tokenizer.vocabSize);
  const specialIds: number[] = [];
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    if (tokenizer.isByteFallback(id)) byteFallback[id] = 1;
    if (tokenizer.isSpecial(id)) specialIds.push(id);
  }
  const facts = vocabularyFacts(tokenizer);
  const ready: ReadyMessage = {
    type: 'ready', bosId: tokenizer.bosId, eosId: tokenizer.eosId, unkId: tokenizer.unkId, fim: tokenizer.fim, vocabSize: tokenizer.vocabSize,
    byteFallback, specialIds, markers: [...facts.markers], longestPiece: facts.longestPiece,
  };
  task.port.on('message', (req: CallRequest) => {
    let reply: CallReply;
    try {
      reply = { seq: req.seq, ok: true, value: answer(tokenizer, req) };
    } catch (e) {
      reply = { seq: req.seq, ok: false, error: (e as Error).message };
    }
    task.port.postMessage(reply);
    Atomics.store(task.signal, 0, 1);
    Atomics.notify(task.signal, 0);
  });
  parentPort!.postMessage(ready, [byteFallback.buffer]);
}

function answer(tokenizer: MixqTokenizer, { method, args }: CallRequest): unknown {
  switch (method) {
    case 'encode': return tokenizer.encode(args[0] as string, args[1] as EncodeOptions);
    case 'decode': return tokenizer.decode(args[0] as number[], args[1] as DecodeOptions);
    case 'fimPrompt': return tokenizer.fimPrompt(args[0] as string, args[1] as string, args[2] as FimMode);
    case 'tokenText': return tokenizer.tokenText(args[0] as number);
  }
}
