/**
 * Wires quantization into the language server (one call from server.ts): the job requests of #protocol
 * (mixq/quantize, mixq/quantizeCancel, mixq/checkQuantizeSource) and the recipe language features
 * (diagnostics, completion, hover, CodeLens) for documents whose language is mixq-recipe or whose name ends in
 * .mixq.toml; other documents get no answer from these handlers.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  ErrorCodes,
  LSPErrorCodes,
  ResponseError,
  type Connection,
  CodeLensRefreshRequest,
  type InitializeParams,
  type ServerCapabilities,
  type TextDocuments,
} from 'vscode-languageserver/node';
import type { TextDocument } from 'vscode-languageserver-textdocument';

import {
  CheckQuantizeSourceRequest,
  QuantizeCancelRequest,
  QuantizeProgressNotification,
  QuantizeRequest,
  type QuantizeParams,
  type QuantizeResult,
} from '#protocol';
import { isRecipe, recipeCodeLenses, recipeCompletions, recipeDiagnostics, recipeHover } from '../recipe/features';
import { checkMixtralSource } from '../recipe/source';
import { JobRefused, jobSettings, QuantizeJobHost } from './quantizeJobs';
import { QuantizeError } from './quantizeRun';

/** The capabilities to merge into the server's InitializeResult. */
export const quantizeCapabilities: ServerCapabilities = {
  completionProvider: { triggerCharacters: ['[', '='] },
  hoverProvider: true,
  codeLensProvider: { resolveProvider: false },
};

/** A recipe's file path (untitled documents: a name in the current folder, for relative paths). */
function recipePath(uri: string): string {
  return uri.startsWith('file:') ? fileURLToPath(uri) : path.resolve(path.basename(uri));
}

export interface QuantizeFeatures {
  jobs: QuantizeJobHost;
  /** Call from onInitialize with the client's params (whether it can refresh lenses). */
  initialize(params: InitializeParams): void;
}

export function registerQuantizeFeatures(connection: Connection, documents: TextDocuments<TextDocument>, log: (msg: string) => void): QuantizeFeatures {
  const recipeDoc = (uri: string): TextDocument | undefined => {
    const doc = documents.get(uri);
    return doc && isRecipe(doc.uri, doc.languageId) ? doc : undefined;
  };
  const validate = (doc: TextDocument): void => {
    if (!isRecipe(doc.uri, doc.languageId)) return;
    const version = doc.version;
    const diagnostics = recipeDiagnostics(doc.getText(), recipePath(doc.uri));
    void connection.sendDiagnostics({ uri: doc.uri, version, diagnostics });
  };
  // Only when the client said it supports workspace/codeLens/refresh (a test client may not).
  let canRefreshLenses = false;
  const refreshLenses = (): void => {
    if (canRefreshLenses) void connection.sendRequest(CodeLensRefreshRequest.type).catch(() => undefined);
  };
  const revalidateAll = (): void => {
    for (const doc of documents.all()) validate(doc);
    refreshLenses();
  };
  const jobs = new QuantizeJobHost((p) => void connection.sendNotification(QuantizeProgressNotification, p), log, revalidateAll);

  documents.onDidOpen((e) => validate(e.document));
  documents.onDidChangeContent((e) => validate(e.document));
  documents.onDidClose((e) => {
    if (isRecipe(e.document.uri, e.document.languageId)) void connection.sendDiagnostics({ uri: e.document.uri, diagnostics: [] });
  });

  connection.onCompletion((params) => {
    const doc = recipeDoc(params.textDocument.uri);
    return doc ? recipeCompletions(doc.getText(), params.position) : null;
  });
  connection.onHover((params) => {
    const doc = recipeDoc(params.textDocument.uri);
    return doc ? recipeHover(doc.getText(), params.position) : null;
  });
  connection.onCodeLens((params) => {
    const doc = recipeDoc(params.textDocument.uri);
    return doc ? recipeCodeLenses(doc.uri, doc.getText(), recipePath(doc.uri), jobs.busy) : null;
  });

  connection.onRequest(QuantizeRequest, async (params: QuantizeParams, token): Promise<QuantizeResult> => {
    try {
      const settings = jobSettings(params, (uri) => documents.get(uri)?.getText());
      const result = jobs.run(settings, (listener) => token.onCancellationRequested(listener));
      refreshLenses();
      return await result;
    } catch (e) {
      if (e instanceof QuantizeError && e.cancelled) throw new ResponseError(LSPErrorCodes.RequestCancelled, 'quantization cancelled: nothing was written');
      if (e instanceof JobRefused || e instanceof QuantizeError) throw new ResponseError(ErrorCodes.InvalidRequest, e.message);
      throw new ResponseError(ErrorCodes.InternalError, (e as Error).message);
    }
  });
  connection.onRequest(QuantizeCancelRequest, () => ({ cancelled: jobs.cancel() }));
  connection.onRequest(CheckQuantizeSourceRequest, (params: { path: string }) => {
    const reason = checkMixtralSource(path.resolve(params.path));
    return reason ? { ok: false, reason } : { ok: true };
  });
  return {
    jobs,
    initialize: (params) => {
      canRefreshLenses = params.capabilities.workspace?.codeLens?.refreshSupport === true;
    },
  };
}
