import { Worker } from 'node:worker_threads';

/**
 * Starts the worker module `name` (thread-worker, checkpointer-worker) that sits next to this
 * file: the compiled .js in a build. Run from the TypeScript sources (the tests, under tsx), the
 * thread registers tsx's loader itself first: a worker does not inherit the loader hooks of the
 * thread that starts it.
 */
export function startWorker(name: string, workerData: unknown): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, import.meta.url), { workerData });
  const api = import.meta.resolve('tsx/esm/api');
  const entry = new URL(`./${name}.ts`, import.meta.url).href;
  const boot = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(boot, { eval: true, workerData });
}
