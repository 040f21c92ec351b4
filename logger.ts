/**
 * A small leveled logger writing one line per entry to stderr: time, level, message and optional
 * fields as JSON. Never pass secrets or raw IP addresses to it.
 *
 * @module
 */

/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** A logger bound to a minimum level. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void;
}

/** Creates a logger that drops entries below `minLevel`. */
export function createLogger(minLevel: LogLevel = "info"): Logger {
  const encoder = new TextEncoder();
  const log = (level: LogLevel, message: string, fields?: Record<string, unknown>) => {
    if (RANK[level] < RANK[minLevel]) return;
    const extra = fields === undefined ? "" : ` ${JSON.stringify(fields)}`;
    const line = `${new Date().toISOString()} ${
      level.toUpperCase().padEnd(5)
    } ${message}${extra}\n`;
    Deno.stderr.writeSync(encoder.encode(line));
  };
  return {
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
    log,
  };
}
