// Every error the page shows is one readable line.
import { Code, ConnectError } from "@connectrpc/connect";

/** One line for any failure: the gRPC status and its message. */
export function describe(error: unknown): string {
  if (error instanceof ConnectError) {
    const message = error.rawMessage.replace(/\s+/g, " ").trim();
    return `${codeName(error.code)}: ${message || "no message"}`;
  }
  if (error instanceof Error) {
    return error.message.replace(/\s+/g, " ").trim();
  }
  return String(error);
}

/** `UNAVAILABLE`, `NOT_FOUND`... as gRPC names them. */
export function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** The gRPC status code of `error`, if it is a call's failure. */
export function codeOf(error: unknown): Code | undefined {
  return error instanceof ConnectError ? error.code : undefined;
}

const RETRY_INFO = "google.rpc.RetryInfo";
/** The longest the page waits because a server asked it to. */
const LONGEST_RETRY_DELAY_MS = 60_000;

/** When the server asked to be tried again (a `google.rpc.RetryInfo`
 * detail, as quotas and lockouts send), in milliseconds, if it did. */
export function retryDelayMs(error: unknown): number | undefined {
  if (!(error instanceof ConnectError)) {
    return undefined;
  }
  for (const detail of error.details) {
    if ("type" in detail && detail.type === RETRY_INFO && detail.value instanceof Uint8Array) {
      const delay = decodeRetryDelay(detail.value);
      if (delay !== undefined) {
        return Math.min(delay, LONGEST_RETRY_DELAY_MS);
      }
    }
  }
  return undefined;
}

/** `RetryInfo { Duration retry_delay = 1 }`, `Duration { int64 seconds =
 * 1; int32 nanos = 2 }`, read off the wire: milliseconds. */
function decodeRetryDelay(bytes: Uint8Array): number | undefined {
  const fields = (data: Uint8Array) => {
    const found = new Map<number, number | Uint8Array>();
    let at = 0;
    const varint = () => {
      let value = 0;
      for (let shift = 0; at < data.length; shift += 7) {
        const byte = data[at++];
        value += (byte & 0x7f) * 2 ** shift;
        if (byte < 0x80) {
          return value;
        }
      }
      throw new Error("truncated");
    };
    while (at < data.length) {
      const key = varint();
      const [field, wire] = [Math.floor(key / 8), key % 8];
      if (wire === 0) {
        found.set(field, varint());
      } else if (wire === 2) {
        const length = varint();
        found.set(field, data.subarray(at, at + length));
        at += length;
      } else {
        throw new Error("unexpected wire type");
      }
    }
    return found;
  };
  try {
    const duration = fields(bytes).get(1);
    if (!(duration instanceof Uint8Array)) {
      return undefined;
    }
    const parts = fields(duration);
    const seconds = Number(parts.get(1) ?? 0);
    const nanos = Number(parts.get(2) ?? 0);
    return seconds * 1000 + Math.ceil(nanos / 1e6);
  } catch {
    return undefined;
  }
}
