import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Config } from "../runtime/config.js";
import { ConfigError } from "../runtime/errors.js";

export interface ApiToken {
  token: string;
  /** true when demo mode made it up at start-up */
  generated: boolean;
}

/** The write token: from CEA_API_TOKEN, generated in demo mode, otherwise start-up stops. */
export function resolveToken(config: Pick<Config, "CEA_API_TOKEN" | "CEA_DEMO">): ApiToken {
  if (config.CEA_API_TOKEN) return { token: config.CEA_API_TOKEN, generated: false };
  if (config.CEA_DEMO) return { token: randomBytes(24).toString("base64url"), generated: true };
  throw new ConfigError(
    "CEA_API_TOKEN is not set: cea-backend refuses to start without a bearer token for its write routes " +
      "(set CEA_API_TOKEN to a secret of at least 16 characters, or CEA_DEMO=true to have one generated)",
  );
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * A checker for `Authorization: Bearer <token>`. Both sides are hashed first so
 * the comparison is constant-time whatever the length of what the client sent.
 */
export function bearerChecker(token: string): (header: string | undefined) => boolean {
  const want = digest(token);
  return (header) => {
    if (header === undefined) return false;
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    if (!m) return false;
    return timingSafeEqual(digest(m[1]!), want);
  };
}
