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
