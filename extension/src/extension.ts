/** Entry of the MixQ VS Code extension: lifecycle, status and commands; the language server does the rest. */
import * as vscode from 'vscode';

import { openProfiler, openSettings, profileModel, restartServer, selectModel, setApiKey, showLog, showMenu, toggleCompletions } from './commands';
import { acceptPartially, createStats, DID_ACCEPT_COMMAND, didAccept, resetStatistics, showStatistics, statsObserver } from './completionUx';
import { Ctx } from './ctx';
import { cancelQuantization, newRecipe, quantizeModel, quantizeWithRecipe } from './quantize';

let ctx: Ctx | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  ctx = new Ctx(context);
  const stats = createStats(context);
  ctx.completionObserver = statsObserver(stats);
  ctx.statsSummary = () => stats.summaryLine();
  context.subscriptions.push(
    ctx,
    vscode.commands.registerCommand('mixq.selectModel', selectModel(ctx)),
    vscode.commands.registerCommand('mixq.restartServer', restartServer(ctx)),
    vscode.commands.registerCommand('mixq.setApiKey', setApiKey(ctx)),
    vscode.commands.registerCommand('mixq.showLog', showLog(ctx)),
    vscode.commands.registerCommand('mixq.toggleCompletions', toggleCompletions(ctx)),
    vscode.commands.registerCommand('mixq.showMenu', showMenu(ctx)),
    vscode.commands.registerCommand('mixq.openSettings', openSettings()),
    vscode.commands.registerCommand('mixq.acceptNextWord', acceptPartially(ctx, stats, 'word')),
    vscode.commands.registerCommand('mixq.acceptNextLine', acceptPartially(ctx, stats, 'line')),
    vscode.commands.registerCommand(DID_ACCEPT_COMMAND, didAccept(stats)),
    vscode.commands.registerCommand('mixq.showStatistics', showStatistics(stats)),
    vscode.commands.registerCommand('mixq.resetStatistics', resetStatistics(stats)),
    vscode.commands.registerCommand('mixq.openProfiler', openProfiler(ctx)),
    vscode.commands.registerCommand('mixq.profileModel', profileModel(ctx)),
    vscode.commands.registerCommand('mixq.quantizeModel', quantizeModel(ctx)),
    vscode.commands.registerCommand('mixq.quantizeWithRecipe', quantizeWithRecipe(ctx)),
    vscode.commands.registerCommand('mixq.newRecipe', newRecipe()),
    vscode.commands.registerCommand('mixq.cancelQuantization', cancelQuantization(ctx)),
  );
  await ctx.loadApiKey();
  await ctx.start();
}

export async function deactivate(): Promise<void> {
  await ctx?.stop();
  ctx = undefined;
}
