/** Messages between the profiler panel (./profilerPanel) and its webview script (../webview/profiler.ts). */
import type { ProfileData } from '#protocol';

export type ToWebview =
  /** The data to show; `note` says where it comes from (live, a Profile Model run, …). */
  | { type: 'profile'; data: ProfileData; note: string }
  /** The server is down, restarting or has no model: keep what is shown, say so. */
  | { type: 'status'; text: string; level: 'info' | 'warning' }
  | { type: 'paused'; paused: boolean };

export type FromWebview =
  | { type: 'ready' }
  | { type: 'pause'; paused: boolean }
  | { type: 'reset' }
  | { type: 'export'; format: 'trace' | 'csv' }
  | { type: 'profileModel' };
