import type { Redis } from "ioredis";
import type { Logger } from "./log.js";

// The health of a service instance: a set of current problems, one per source
// (a stage, the stream reader, a component). The service is "degraded" while
// any is set. Each change of state is logged once (a new problem, a different
// cause, a recovery), never once per retry.

export interface HealthReport {
  status: "ok" | "degraded";
  /** One line per current problem: "<source>: <cause>". */
  reason: string | null;
  problems: Record<string, string>;
}

export class Health {
  private readonly problems = new Map<string, { cause: string; since: string; retries: number }>();
  /** Called on every change of state (a problem appears, changes or goes), e.g. to publish it at once. */
  onChange: (() => void) | null = null;
  constructor(private readonly log: Logger) {}

  /** Record a problem of `source`; logs only when it is new or its cause changed. */
  degrade(source: string, cause: string, detail: Record<string, unknown> = {}): void {
    const now = this.problems.get(source);
    if (now && now.cause === cause) {
      now.retries++;
      return;
    }
    this.problems.set(source, { cause, since: new Date().toISOString(), retries: 0 });
    this.log.warn({ source, cause, ...detail }, "degraded: retrying until it recovers");
    this.onChange?.();
  }

  /** Clear the problem of `source`, logging the recovery once. */
  recover(source: string): void {
    const was = this.problems.get(source);
    if (!was) return;
    this.problems.delete(source);
    this.log.info({ source, cause: was.cause, since: was.since, retries: was.retries }, "recovered");
    this.onChange?.();
  }

  has(source: string): boolean {
    return this.problems.has(source);
  }

  get degraded(): boolean {
    return this.problems.size > 0;
  }

  report(): HealthReport {
    const problems: Record<string, string> = {};
    for (const [k, v] of this.problems) problems[k] = v.cause;
    const lines = Object.entries(problems).map(([k, v]) => `${k}: ${v}`);
    return { status: lines.length ? "degraded" : "ok", reason: lines.length ? lines.join("; ") : null, problems };
  }
}

/** `--check`: healthy when the health key exists and says ok. */
export async function checkHealth(redis: Redis, key: string): Promise<{ ok: boolean; body: string | null }> {
  const body = await redis.get(key);
  if (!body) return { ok: false, body };
  try {
    return { ok: (JSON.parse(body) as { status?: string }).status === "ok", body };
  } catch {
    return { ok: false, body };
  }
}
