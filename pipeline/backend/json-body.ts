import type { FastifyInstance } from "fastify";
import { clip, HttpError } from "./http-errors.js";

// The JSON body parser. Keys that could reach an object's prototype
// (`__proto__`, `constructor`) are refused with a 400 naming the key and where
// it is, instead of "not valid JSON": the body is valid JSON, and the client
// should be told what is wrong with it. No schema of the API has such a key.

const FORBIDDEN = new Set(["__proto__", "constructor"]);

/** The path of the first forbidden key, or undefined. */
function forbiddenKey(v: unknown, path: (string | number)[] = []): (string | number)[] | undefined {
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = forbiddenKey(v[i], [...path, i]);
      if (p) return p;
    }
  } else if (v !== null && typeof v === "object") {
    for (const k of Object.keys(v)) {
      if (FORBIDDEN.has(k)) return [...path, k];
      const p = forbiddenKey((v as Record<string, unknown>)[k], [...path, k]);
      if (p) return p;
    }
  }
  return undefined;
}

export function installJsonParser(app: FastifyInstance, bodyLimit: number): void {
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string", bodyLimit }, (_req, body, done) => {
    const text = body as string;
    if (text.length === 0) return done(new HttpError(400, "empty_body", "the request body is empty"), undefined);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return done(new HttpError(400, "malformed_json", "the request body is not valid JSON"), undefined);
    }
    // the walk only for the rare body that mentions such a key at all
    const bad = text.includes("__proto__") || text.includes("constructor") ? forbiddenKey(value) : undefined;
    if (bad) {
      const index = Array.isArray(value) && typeof bad[0] === "number" ? (bad.shift() as number) : undefined;
      const path = bad.map((s) => clip(String(s))).join(".");
      const issue = { path, message: "this key is not allowed (it would reach an object's prototype)" };
      return done(
        new HttpError(
          400,
          "validation_failed",
          `invalid body: ${index === undefined ? "" : `[${index}] `}${path}: ${issue.message}`,
          {
            issues: [index === undefined ? issue : { index, ...issue }],
          },
        ),
        undefined,
      );
    }
    done(null, value);
  });
}
