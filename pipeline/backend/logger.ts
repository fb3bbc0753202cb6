import type { DestinationStream } from "pino";
import { type Logger, pino } from "pino";

// Names of headers and query parameters that carry credentials, wherever a
// client puts them: the API's token belongs in Authorization, but a client may
// send it as ?token=, X-Api-Key, Proxy-Authorization, a cookie, … and none of
// it may reach the log.
const CREDENTIAL =
  /auth|token|secret|passw|pwd|api[-_]?key|^key$|access[-_]?key|session|cookie|credential|signature|^sig$|jwt|bearer/i;
// a value that carries its own scheme (Bearer …, Basic …) is a credential whatever its header is called
const SCHEMED = /^\s*(bearer|basic|digest|token|negotiate)\s/i;
const REDACTED = "[redacted]";

function decodeName(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s;
  }
}

/** The URL with every credential-looking query parameter's value replaced. */
export function redactUrl(url: string): string {
  const q = url.indexOf("?");
  if (q < 0) return url;
  const params = url
    .slice(q + 1)
    .split("&")
    .map((kv) => {
      const eq = kv.indexOf("=");
      const name = eq < 0 ? kv : kv.slice(0, eq);
      return CREDENTIAL.test(decodeName(name)) ? `${name}=${REDACTED}` : kv;
    });
  return `${url.slice(0, q)}?${params.join("&")}`;
}

/** Headers with every credential-looking one's value replaced. */
export function redactHeaders(headers: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(headers)) {
    const secret = CREDENTIAL.test(k) || (typeof v === "string" && SCHEMED.test(v));
    out[k] = secret ? REDACTED : v;
  }
  return out;
}

/**
 * The API's logger. Request logs carry the headers (useful behind a proxy)
 * with every credential redacted, and the URL with credential query
 * parameters redacted; the token itself is never logged. JSON for journald;
 * pretty only when a person watches a TTY.
 */
export function createBackendLogger(level: string, destination?: DestinationStream): Logger {
  const opts = {
    name: "cea-backend",
    level,
    redact: { paths: ["token"], censor: REDACTED },
    serializers: {
      req: (req: { method: string; url: string; id: string; ip?: string; headers: Record<string, unknown> }) => ({
        id: req.id,
        method: req.method,
        url: redactUrl(req.url),
        remote: req.ip,
        headers: redactHeaders(req.headers),
      }),
    },
  };
  if (destination) return pino(opts, destination);
  if (process.stdout.isTTY === true) {
    return pino({
      ...opts,
      transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l" } },
    });
  }
  return pino(opts);
}
