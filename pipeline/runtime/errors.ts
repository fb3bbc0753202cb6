// One error class per meaning; callers branch on the class, never on messages.

/** Configuration or a config file is invalid: stop start-up, say where. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * An entry that can never be processed (undecodable frame, unknown id, value
 * that is not finite): dead-letter it now, retrying cannot help.
 */
export class UnrecoverableError extends Error {
  override name = "UnrecoverableError";
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message);
  }
}

/** A dependency (PostgreSQL, Redis) is unreachable: back off and retry; never ack or dead-letter. */
export class TransientError extends Error {
  override name = "TransientError";
}
