import * as fs from 'node:fs';

/** Removes a test's temporary directory. A server that has not yet exited may create files in it while
 * it is removed (ENOTEMPTY even after retries); a leftover directory under /tmp is not a test failure. */
export function removeTemp(dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  } catch (error) {
    console.warn(`left ${dir}: ${String(error)}`);
  }
}
