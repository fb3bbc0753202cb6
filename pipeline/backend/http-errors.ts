import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { classifyDbError, type DbFailure, describeDbFailure } from "../../db/pg-errors.js";
import type { ErrorBody } from "./schemas.js";

/** An error with a status and a body meant for the client. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly extra: Partial<ErrorBody> = {},
    /** what went wrong underneath (logged, never sent) */
    readonly underlying?: unknown,
  ) {
    super(message);
  }
}

type Issue = NonNullable<ErrorBody["issues"]>[number];
const MAX_ISSUES = 100;
/** Most characters of client input (a key, a path, a value) an error answer repeats. */
const ECHO_MAX = 64;
const MESSAGE_MAX = 1_000;

/** Client input as an error answer may repeat it: at most ECHO_MAX characters. */
export function clip(s: string, max = ECHO_MAX): string {
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length} characters)`;
}

/**
 * 503: the database did not answer in time or refused to work (down, frozen,
 * read-only, a missing grant, …). The client retries the same request: a
 * reading already stored then answers 200, so a retry never stores twice.
 */
export function databaseUnavailable(underlying: unknown, detail = ""): HttpError {
  return new HttpError(503, "unavailable", `database unavailable${detail}`, {}, underlying);
}

/** 503: Redis did not answer (live values, health). */
export function redisUnavailable(underlying?: unknown): HttpError {
  return new HttpError(503, "unavailable", "redis unavailable", {}, underlying);
}

/**
 * The API's reading of a database error, by the one classification
 * (db/pg-errors.ts): a data exception or constraint violation (classes 22 and
 * 23) is about the request's values — 400 naming the parameters the statement
 * took; anything else is an outage — 503 naming the database, the cause in the
 * log only.
 */
export function fromDbError(err: unknown, params: readonly string[]): HttpError {
  if (err instanceof HttpError) return err;
  const f: DbFailure = classifyDbError(err);
  if (f.kind === "data") {
    const message = `the database refused a value (${f.code} ${f.what}): ${clip(f.message, 200)}`;
    return new HttpError(
      400,
      "validation_failed",
      `invalid ${params.length > 0 ? params.join(", ") : "request"}: ${message}`,
      { issues: params.map((path) => ({ path, message })) },
      err,
    );
  }
  return databaseUnavailable(err);
}

/** Run database work of a request; its errors become the API's answers (fromDbError). */
export async function dbCall<T>(params: readonly string[], work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw fromDbError(err, params);
  }
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
    const base = segs.map((s) => clip(s)).join(".");
    const keys = (v.params as { keys?: unknown }).keys;
    const msg = clip(v.message ?? "invalid", 200);
    if (Array.isArray(keys) && keys.length > 0) {
      for (const k of keys) {
        const path = base ? `${base}.${clip(String(k))}` : clip(String(k));
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
  return clip(parts.join("; ") + (issues.length > 5 ? `; and ${issues.length - 5} more` : ""), MESSAGE_MAX);
}

/** Headers on every answer, also those Fastify's router makes before any hook runs. */
function commonHeaders(req: FastifyRequest, reply: FastifyReply): void {
  reply.header("x-request-id", req.id);
  reply.header("x-content-type-options", "nosniff");
}

/** Route patterns by method, to tell "no such path" (404) from "not this method" (405). */
function routeTable(app: FastifyInstance): (path: string) => string[] {
  const routes: { method: string; re: RegExp }[] = [];
  app.addHook("onRoute", (opts) => {
    const url = opts.url ?? opts.path;
    if (!url) return;
    const escaped = url
      .split(/(:[A-Za-z0-9_]+)/)
      .map((part) => (part.startsWith(":") ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
      .join("");
    const re = new RegExp(`^${escaped}/?$`);
    for (const m of Array.isArray(opts.method) ? opts.method : [opts.method]) routes.push({ method: m, re });
  });
  return (path) => [...new Set(routes.filter((r) => r.re.test(path)).map((r) => r.method))].sort();
}

/**
 * One error policy for the whole API: 4xx bodies say what is wrong and name the
 * field, repeating at most a little of the client's input; a 503 names the
 * dependency that is down; any other 5xx says only "internal error" with the
 * request id, and the real error goes to the log.
 */
export function installErrorHandling(app: FastifyInstance, bodyLimit: number): void {
  const methodsOf = routeTable(app);
  app.addHook("onRequest", async (req, reply) => commonHeaders(req, reply));

  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const send = (status: number, body: ErrorBody) => reply.code(status).send(body);
    if (err instanceof HttpError) {
      if (err.statusCode === 503) {
        const cause = err.message.startsWith("database")
          ? describeDbFailure(classifyDbError(err.underlying))
          : String((err.underlying as Error | undefined)?.message ?? err.underlying);
        req.log.warn({ cause }, err.message);
        reply.header("retry-after", "1");
        return send(503, { error: err.code, message: err.message, ...err.extra, request_id: String(req.id) });
      }
      if (err.underlying !== undefined) req.log.info({ cause: String(err.underlying) }, err.message);
      return send(err.statusCode, { error: err.code, message: err.message, ...err.extra });
    }
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
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return send(status, { error: "bad_request", message: clip(err.message, 200) });
    }
    req.log.error({ err }, "request failed");
    return send(500, {
      error: "internal",
      message: "internal error; the request id identifies it in the service log",
      request_id: String(req.id),
    });
  });

  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split("?")[0] ?? "";
    const allowed = methodsOf(path);
    if (allowed.length > 0) {
      return reply
        .code(405)
        .header("allow", allowed.join(", "))
        .send({
          error: "method_not_allowed",
          message: `${clip(req.method, 16)} is not allowed on ${clip(path, 200)}; allowed: ${allowed.join(", ")}`,
        } satisfies ErrorBody);
    }
    return reply
      .code(404)
      .send({ error: "not_found", message: `no route ${clip(req.method, 16)} ${clip(path, 200)}` } satisfies ErrorBody);
  });
}

/**
 * Errors Fastify's router answers before any route or hook runs (a path
 * parameter over its length limit, a path that is not valid percent-encoding):
 * the same error shape and headers as every other answer.
 */
export function frameworkErrors(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  commonHeaders(req, reply);
  if (err.code === "FST_ERR_MAX_PARAM_LENGTH") {
    void reply.code(414).send({
      error: "uri_too_long",
      message: "a path parameter is longer than the API accepts (ids are at most 10 digits)",
    } satisfies ErrorBody);
    return;
  }
  void reply.code(400).send({
    error: "bad_request",
    message: err.code === "FST_ERR_BAD_URL" ? "the path is not valid percent-encoded UTF-8" : clip(err.message, 200),
  } satisfies ErrorBody);
}

/** Run a Redis call with a deadline: a down Redis gives a 503, never a hanging request. */
export async function redisCall<T>(status: string, call: () => Promise<T>, ms = 1_000): Promise<T> {
  if (status === "reconnecting" || status === "end" || status === "close") throw redisUnavailable(status);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      call(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(redisUnavailable(`no answer within ${ms} ms`)), ms);
      }),
    ]);
  } catch (err) {
    // not connected, timed out, or an error reply (a key of the wrong type, OOM, …): none is the client's doing
    throw err instanceof HttpError ? err : redisUnavailable(err);
  } finally {
    clearTimeout(timer);
  }
}
