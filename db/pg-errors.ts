import { TransientError } from "../pipeline/runtime/errors.js";

// What a database error means for the data in hand, decided in one place for
// every writer (can-worker, cea-backend, the legacy migration).
//
// Allow-list, not exclusion: only SQLSTATE classes 22 (data exception) and 23
// (integrity constraint violation) say "these rows are bad" — the writer may
// isolate the row and dead-letter or refuse it. Everything else — a read-only
// or frozen database, a revoked grant, a missing table, a timeout, an internal
// error, a driver or network error, anything not foreseen — is an OUTAGE: the
// rows are fine and the database is not; nothing is acknowledged or refused,
// the work is retried with backoff and health says why.

export type DbFailureKind = "data" | "outage";

export interface DbFailure {
  kind: DbFailureKind;
  /** The SQLSTATE, the driver's or socket's error code, or null. */
  code: string | null;
  /** The database's (or driver's) message, for health and logs. */
  message: string;
  /** What the code means, in a few words (for health and logs). */
  what: string;
}

/** SQLSTATE classes whose errors are about the rows themselves. */
const DATA_CLASSES: Record<string, string> = {
  "22": "data exception",
  "23": "integrity constraint violation",
};

/** Names for the outage conditions an operator meets most; any other code is still an outage. */
const KNOWN: Record<string, string> = {
  "08": "connection exception",
  "25006": "read-only transaction (database is read-only)",
  "40001": "serialization failure",
  "40P01": "deadlock detected",
  "42501": "insufficient privilege (a grant is missing)",
  "42P01": "undefined table",
  "42703": "undefined column",
  "42883": "undefined function",
  "53": "insufficient resources",
  "53100": "disk full",
  "53200": "out of memory",
  "53300": "too many connections",
  "55P03": "lock not available (lock_timeout)",
  "57014": "query canceled (statement_timeout)",
  "57P01": "admin shutdown",
  "57P02": "crash shutdown",
  "57P03": "cannot connect now",
  "57P05": "idle session timeout",
  "58": "system error",
  "58P01": "undefined file (an extension library is missing)",
  XX000: "internal error",
  XX: "internal error",
};

const SQLSTATE = /^[0-9A-Z]{5}$/;

/** Classify any error thrown while talking to PostgreSQL. Never throws. */
export function classifyDbError(err: unknown): DbFailure {
  const e = err as { code?: unknown; message?: unknown; cause?: unknown } | null | undefined;
  // a TransientError wrapping the driver's error keeps the original's code
  if (err instanceof TransientError && e?.cause !== undefined && e.cause !== err) {
    const inner = classifyDbError(e.cause);
    return { ...inner, kind: "outage" };
  }
  const code = typeof e?.code === "string" && e.code !== "" ? e.code : null;
  const message = typeof e?.message === "string" && e.message !== "" ? e.message : String(err);
  if (code && SQLSTATE.test(code)) {
    const cls = code.slice(0, 2);
    const data = DATA_CLASSES[cls];
    if (data) return { kind: "data", code, message, what: data };
    return { kind: "outage", code, message, what: KNOWN[code] ?? KNOWN[cls] ?? `SQLSTATE class ${cls}` };
  }
  // no SQLSTATE: a socket error (ECONNREFUSED, ...), a driver error (connection
  // terminated, pool timeout) or something we did not foresee: all outages.
  return { kind: "outage", code, message, what: code ? "network or driver error" : "unexpected error" };
}

/** True only for errors about the rows themselves (SQLSTATE classes 22 and 23). */
export function isDataError(err: unknown): boolean {
  return classifyDbError(err).kind === "data";
}

/** One line for health and logs: "25006 read-only transaction (…): cannot execute INSERT in a read-only transaction". */
export function describeDbFailure(f: DbFailure): string {
  return `${f.code ? `${f.code} ` : ""}${f.what}: ${f.message}`;
}
