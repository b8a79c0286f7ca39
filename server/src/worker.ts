/**
 * The entry script of every worker thread (./threads): runs the task its workerData names.
 */
import { workerData } from 'node:worker_threads';

import { calibrationTask } from './jobs/calibrationThread';
import type { WorkerTask } from './threads';
import { serveTokenizer } from './tokenizerThread';

const task = workerData as WorkerTask;
switch (task.task) {
  case 'tokenizer':
    serveTokenizer(task);
    break;
  case 'calibration':
    calibrationTask(task);
    break;
}
