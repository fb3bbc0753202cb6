import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { TransientError } from "../runtime/errors.js";
import type { ErrorBody } from "./schemas.js";

/** An error with a status and a body meant for the client. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly extra: Partial<ErrorBody> = {},
  ) {
    super(message);
  }
}

type Issue = NonNullable<ErrorBody["issues"]>[number];
const MAX_ISSUES = 100;

// PostgreSQL / network conditions that mean "the database is not there right now".
const DOWN_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "EPIPE"]);
export function isDependencyDown(err: unknown): boolean {
  if (err instanceof TransientError) return true;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === "string" ? e.code : "";
  if (DOWN_CODES.has(code) || code.startsWith("08") || ["57P01", "57P02", "57P03", "53300"].includes(code)) return true;
  const msg = typeof e?.message === "string" ? e.message : "";
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/.test(
    msg,
  );
}

/** zod issues (as the type provider hands them over) → the API's field-naming issues. */
function validationIssues(
  err: { validation: { instancePath: string; message?: string; params: unknown }[] },
  body: unknown,
  context: string,
): Issue[] {
  const out: Issue[] = [];
  for (const v of err.validation) {
    const segs = v.instancePath.split("/").filter((s) => s !== "");
    let index: number | undefined;
    if (context === "body" && Array.isArray(body) && segs.length > 0 && /^\d+$/.test(segs[0]!)) {
      index = Number(segs.shift());
    }
    const base = segs.join(".");
    const keys = (v.params as { keys?: unknown }).keys;
    const msg = v.message ?? "invalid";
    if (Array.isArray(keys) && keys.length > 0) {
      for (const k of keys) {
        const path = base ? `${base}.${String(k)}` : String(k);
        out.push(index === undefined ? { path, message: "unknown field" } : { index, path, message: "unknown field" });
      }
    } else {
      out.push(index === undefined ? { path: base, message: msg } : { index, path: base, message: msg });
    }
  }
  return out;
}

function describeIssues(issues: Issue[]): string {
  const parts = issues
    .slice(0, 5)
    .map((i) => `${i.index === undefined ? "" : `[${i.index}] `}${i.path || "(body)"}: ${i.message}`);
  return parts.join("; ") + (issues.length > 5 ? `; and ${issues.length - 5} more` : "");
}

/**
 * One error policy for the whole API: 4xx bodies say what is wrong and name the
 * field; a 503 names the dependency that is down; any other 5xx says only
 * "internal error" with the request id, and the real error goes to the log.
 */
export function installErrorHandling(app: FastifyInstance, bodyLimit: number): void {
  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const send = (status: number, body: ErrorBody) => reply.code(status).send(body);
    if (err instanceof HttpError) return send(err.statusCode, { error: err.code, message: err.message, ...err.extra });
    if (hasZodFastifySchemaValidationErrors(err)) {
      const context = err.validationContext ?? "body";
      const all = validationIssues(err, req.body, context);
      const issues = all.slice(0, MAX_ISSUES);
      return send(400, {
        error: "validation_failed",
        message: `invalid ${context}: ${describeIssues(all)}`,
        issues,
        ...(all.length > issues.length ? { issues_total: all.length } : {}),
      });
    }
    switch (err.code) {
      case "FST_ERR_CTP_INVALID_JSON_BODY":
        return send(400, { error: "malformed_json", message: "the request body is not valid JSON" });
      case "FST_ERR_CTP_EMPTY_JSON_BODY":
        return send(400, { error: "empty_body", message: "the request body is empty" });
      case "FST_ERR_CTP_BODY_TOO_LARGE":
        return send(413, {
          error: "body_too_large",
          message: `the request body exceeds the limit of ${bodyLimit} bytes (CEA_BODY_LIMIT)`,
          limit: bodyLimit,
        });
      case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
        return send(415, {
          error: "unsupported_media_type",
          message: "send the body as application/json",
        });
    }
    if (isDependencyDown(err)) {
      const what = err instanceof TransientError ? err.message : "database unavailable";
      req.log.warn({ err }, "dependency unavailable");
      return send(503, { error: "unavailable", message: what, request_id: String(req.id) });
    }
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return send(status, { error: "bad_request", message: err.message });
    }
    req.log.error({ err }, "request failed");
    return send(500, {
      error: "internal",
      message: "internal error; the request id identifies it in the service log",
      request_id: String(req.id),
    });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: "not_found", message: `no route ${req.method} ${req.url.split("?")[0]}` }),
  );
}

/** Run a Redis call with a deadline: a down Redis gives a 503, never a hanging request. */
export async function redisCall<T>(status: string, call: () => Promise<T>, ms = 1_000): Promise<T> {
  if (status === "reconnecting" || status === "end" || status === "close")
    throw new TransientError("redis unavailable");
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      call(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TransientError("redis unavailable (timeout)")), ms);
      }),
    ]);
  } catch (err) {
    // the client's own "not connected" errors mean the same as a timeout
    if (/Connection is closed|ECONNREFUSED|ECONNRESET|enableOfflineQueue/.test((err as Error)?.message ?? ""))
      throw new TransientError("redis unavailable");
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
