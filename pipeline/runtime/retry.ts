import type { Backoff } from "./stage.js";

// The retry policy of the runtime: capped exponential backoff with jitter, so
// several workers never retry in step, and a sleep that a stop cuts short.

export function backoffDelay(b: Backoff, attempt: number): number {
  const exp = Math.min(b.maxMs, b.baseMs * 2 ** Math.min(attempt, 16));
  // full jitter on the upper half
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Waits for `p` at most `ms` (a step that must not hold a stop); `p` gets a handler, so a late rejection is not unhandled. */
export async function atMost(p: Promise<unknown>, ms: number): Promise<void> {
  p.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, ms)))]).finally(() => clearTimeout(timer));
}
