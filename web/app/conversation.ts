// One open chat: its history, paged backwards; its live messages, which
// resume from the last one shown after a drop; and sends that are safe to
// retry.
import { Code, type Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ChatService, type Message } from "../../gen/ts/chat/v1/chat_pb";
import { codeOf, describe, retryDelayMs } from "./errors";
import { el } from "./dom";

/** Messages per history page. */
const PAGE_SIZE = 50;
/** The first wait before reconnecting or resending; it doubles. */
const FIRST_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 8_000;
/** Attempts at one send. */
const SEND_ATTEMPTS = 6;

/** What ends a stream for good rather than for a reconnection. */
function resumable(error: unknown): boolean {
  switch (codeOf(error)) {
    case Code.Unavailable:
    case Code.ResourceExhausted:
    case Code.DeadlineExceeded:
    case Code.Unknown:
    case Code.Internal:
    case Code.Aborted:
    case undefined:
      return true;
    case Code.Unauthenticated:
      // The token expired under the stream: a fresh one resumes it.
      return describe(error).includes("expired");
    default:
      return false;
  }
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** Between half and all of `ms`: clients dropped together do not all come
 * back at the same moment. */
function jittered(ms: number): number {
  return ms / 2 + Math.random() * (ms / 2);
}

/** A fresh idempotency key for one message, however often it is resent. */
function messageKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export class Conversation {
  /** Where a resumed stream starts: the newest message the stream (or the
   * first page of history) gave. Never a sent message's id: others' messages
   * before it may still be on their way. */
  private resumeAfter = 0n;
  private oldestToken = "";
  /** Messages this page sent and shows already, until the stream brings
   * them; as many as sends in flight. */
  private readonly sentAhead = new Set<bigint>();
  private newest = 0n;
  private readonly abort = new AbortController();

  constructor(
    private readonly chats: Client<typeof ChatService>,
    readonly chatId: bigint,
    private readonly list: HTMLOListElement,
    private readonly status: (text: string, ended?: boolean) => void,
    private readonly olderButton: HTMLButtonElement,
    /** Told of each message shown live or sent, the newest so far. */
    private readonly onNewest: (message: Message) => void = () => {},
  ) {}

  /** Shows the newest page, then follows the chat live until closed. */
  async open(): Promise<void> {
    const page = await this.chats.listMessages(
      { chatId: this.chatId, pageSize: PAGE_SIZE },
      { signal: this.abort.signal },
    );
    for (const message of [...page.messages].reverse()) {
      this.fromStream(message);
    }
    this.oldestToken = page.nextPageToken;
    this.olderButton.hidden = this.oldestToken === "";
    void this.follow();
  }

  /** The page of messages before the oldest shown. */
  async older(): Promise<void> {
    if (this.oldestToken === "") {
      return;
    }
    const page = await this.chats.listMessages(
      { chatId: this.chatId, pageSize: PAGE_SIZE, pageToken: this.oldestToken },
      { signal: this.abort.signal },
    );
    for (const message of page.messages) {
      this.prepend(message);
    }
    this.oldestToken = page.nextPageToken;
    this.olderButton.hidden = this.oldestToken === "";
  }

  /** Sends `text`, retried with the same key while the service is unavailable. */
  async send(text: string): Promise<void> {
    const clientMessageId = messageKey();
    let backoff = FIRST_BACKOFF_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        const sent = await this.chats.sendMessage({ chatId: this.chatId, text, clientMessageId });
        if (sent.message && sent.message.id > this.resumeAfter) {
          this.sentAhead.add(sent.message.id);
          this.append(sent.message);
        }
        return;
      } catch (error) {
        // Past a quota, the server says when to come back.
        const asked = retryDelayMs(error);
        const retry =
          codeOf(error) === Code.Unavailable ||
          codeOf(error) === Code.DeadlineExceeded ||
          (codeOf(error) === Code.ResourceExhausted && asked !== undefined);
        if (!retry || attempt >= SEND_ATTEMPTS || this.abort.signal.aborted) {
          throw error;
        }
        this.status(`sending failed (${describe(error)}); retrying`);
        await sleep(asked ?? jittered(backoff), this.abort.signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  close() {
    this.abort.abort();
  }

  /** Live messages, resumed after the last one the stream gave whenever it drops. */
  private async follow(): Promise<void> {
    let backoff = FIRST_BACKOFF_MS;
    while (!this.abort.signal.aborted) {
      try {
        this.status("live");
        const stream = this.chats.connectChat(
          { chatId: this.chatId, sinceMessageId: this.resumeAfter },
          { signal: this.abort.signal },
        );
        for await (const event of stream) {
          if (event.message) {
            this.fromStream(event.message);
            backoff = FIRST_BACKOFF_MS;
          }
        }
        // The server ended the stream without a status: reconnect.
      } catch (error) {
        if (this.abort.signal.aborted) {
          return;
        }
        if (!resumable(error)) {
          const why =
            codeOf(error) === Code.NotFound
              ? "This chat is no longer open to you: you were removed, or it was deleted."
              : `The live view ended: ${describe(error)}`;
          this.status(why, true);
          return;
        }
        this.status(`reconnecting (${describe(error)})`);
      }
      await sleep(jittered(backoff), this.abort.signal);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  /** A message from the stream or the newest history page, in order. */
  private fromStream(message: Message) {
    if (message.id <= this.resumeAfter) {
      return;
    }
    this.resumeAfter = message.id;
    if (this.sentAhead.delete(message.id)) {
      return;
    }
    this.append(message);
  }

  private render(message: Message): HTMLLIElement {
    const at = message.createdAt ? timestampDate(message.createdAt).toLocaleTimeString() : "";
    const item = el(
      "li",
      "message",
      el("span", "at", at),
      el("span", "from", message.fromUsername),
      el("span", "text", message.text),
    );
    item.dataset.id = message.id.toString();
    return item;
  }

  private append(message: Message) {
    // In id order: a message sent here can be shown before others' earlier
    // ones arrive.
    const later =
      message.id < this.newest
        ? [...this.list.children].find(
            (item) => BigInt((item as HTMLElement).dataset.id ?? "0") > message.id,
          )
        : undefined;
    const atBottom = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 4;
    this.list.insertBefore(this.render(message), later ?? null);
    if (message.id > this.newest) {
      this.newest = message.id;
      this.onNewest(message);
    }
    if (atBottom) {
      this.list.scrollTop = this.list.scrollHeight;
    }
  }

  private prepend(message: Message) {
    this.list.prepend(this.render(message));
  }
}
