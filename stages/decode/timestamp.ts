// The receive time of a raw-stream entry as the scanner writes it: ISO 8601
// UTC with exactly six fractional digits ("2026-03-01T00:00:00.000000Z"),
// checked and turned into epoch microseconds byte by byte (no Date parsing of
// text per frame).

export const TS_LENGTH = 27;

const D = 48; // '0'

/** True when the 27 bytes at `o` have the shape of a receive time. */
export function tsValid(b: Uint8Array, o: number): boolean {
  for (let k = 0; k < TS_LENGTH; k++) {
    const c = b[o + k]!;
    switch (k) {
      case 4:
      case 7:
        if (c !== 45) return false; // -
        break;
      case 10:
        if (c !== 84) return false; // T
        break;
      case 13:
      case 16:
        if (c !== 58) return false; // :
        break;
      case 19:
        if (c !== 46) return false; // .
        break;
      case 26:
        if (c !== 90) return false; // Z
        break;
      default:
        if (c < D || c > D + 9) return false;
    }
  }
  return true;
}

const digits = (b: Uint8Array, o: number, k: number): number => {
  let v = 0;
  for (let i = 0; i < k; i++) v = v * 10 + b[o + i]! - D;
  return v;
};

/**
 * Epoch microseconds of a time already checked by tsValid, or NaN when it
 * names no real instant (month 13, 31 February, hour 24, year before 100).
 */
export function tsMicros(b: Uint8Array, o: number): number {
  const y = digits(b, o, 4);
  const mo = digits(b, o + 5, 2);
  const d = digits(b, o + 8, 2);
  const h = digits(b, o + 11, 2);
  const mi = digits(b, o + 14, 2);
  const sec = digits(b, o + 17, 2);
  if (y < 100 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60) return Number.NaN;
  const ms = Date.UTC(y, mo - 1, d, h, mi, sec);
  // a day past the month's end: Date.UTC rolls over into the next month
  if (new Date(ms - sec * 1000).getUTCDate() !== d) return Number.NaN;
  return ms * 1000 + digits(b, o + 20, 6);
}
