// One open chat: its history, paged backwards; its live messages, which
// resume from the last one shown after a drop; sends that are safe to
// retry; the read marker, moved as messages show; and typing.
import { Code, type Client } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ChatService, type Message } from "../../gen/ts/chat/v1/chat_pb";
import { codeOf, describe, retryDelayMs } from "./errors";
import { el } from "./dom";
import { type Presence } from "./presence";

/** Messages per history page. */
const PAGE_SIZE = 50;
/** The first wait before reconnecting or resending; it doubles. */
const FIRST_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 8_000;
/** Attempts at one send. */
const SEND_ATTEMPTS = 6;
/** The read marker moves this long after the last message showed. */
const MARK_AFTER_MS = 300;
/** The marker moves at most this often while messages keep coming. */
const MARK_EVERY_MS = 1000;
/** Typing is said at most this often while the person types; the server
 * shows it for 6 s. */
const TYPING_EVERY_MS = 3_000;

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
  /** The newest message the read marker was moved to from here. */
  private marked = 0n;
  /** The furthest marker a MarkRead answered with: an older answer that
   * arrives late changes nothing. */
  private readAnswered = 0n;
  private markedAt = 0;
  private markTimer: ReturnType<typeof setTimeout> | undefined;
  private lastTyping = 0;
  private readonly abort = new AbortController();
  private readonly onVisible = () => this.markSoon();

  constructor(
    private readonly chats: Client<typeof ChatService>,
    readonly chatId: bigint,
    private readonly me: bigint,
    private readonly list: HTMLOListElement,
    private readonly status: (text: string, ended?: boolean) => void,
    private readonly olderButton: HTMLButtonElement,
    private readonly presence: Presence,
    /** Told of each message shown live or sent, the newest so far. */
    private readonly onNewest: (message: Message) => void = () => {},
    /** Told of what is left unread after the marker moved. */
    private readonly onRead: (unread: bigint) => void = () => {},
  ) {
    document.addEventListener("visibilitychange", this.onVisible);
  }

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
    // A send ends the typing: the next keystroke says it again.
    this.lastTyping = 0;
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

  /** The person is typing: said at most every few seconds. */
  typing() {
    const now = Date.now();
    if (now - this.lastTyping < TYPING_EVERY_MS) {
      return;
    }
    this.lastTyping = now;
    this.chats.setTyping({ chatId: this.chatId }, { signal: this.abort.signal }).catch(() => {
      // Typing is a courtesy: a failure shows nowhere.
    });
  }

  close() {
    this.abort.abort();
    clearTimeout(this.markTimer);
    document.removeEventListener("visibilitychange", this.onVisible);
    this.presence.close();
  }

  /** Marks read what is shown, shortly: a mark already due takes the
   * newest message with it, so a busy chat is marked once a second, not
   * never. */
  private markSoon() {
    if (this.markTimer !== undefined) {
      return;
    }
    const wait = Math.max(MARK_AFTER_MS, this.markedAt + MARK_EVERY_MS - Date.now());
    this.markTimer = setTimeout(() => {
      this.markTimer = undefined;
      void this.markRead();
    }, wait);
  }

  private async markRead() {
    const newest = this.newest;
    if (document.visibilityState !== "visible" || newest <= this.marked || this.abort.signal.aborted) {
      return;
    }
    this.marked = newest;
    this.markedAt = Date.now();
    try {
      const read = await this.chats.markRead(
        { chatId: this.chatId, messageId: newest },
        { signal: this.abort.signal },
      );
      if (read.readMessageId >= this.readAnswered) {
        this.readAnswered = read.readMessageId;
        this.onRead(read.unreadCount);
      }
    } catch {
      // Tried again with the next message shown.
      this.marked = 0n;
    }
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
          } else if (event.readMarker) {
            this.presence.marker(event.readMarker.userId, event.readMarker.messageId);
          } else if (event.typing) {
            this.presence.typed(event.typing.userId, event.typing.forMs);
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
    const when = message.createdAt ? timestampDate(message.createdAt) : undefined;
    const item = el(
      "li",
      message.fromUserId === this.me ? "message mine" : "message",
      el("span", "from", message.fromUsername),
      el("span", "text", message.text),
      el("span", "at", when?.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) ?? ""),
    );
    item.dataset.id = message.id.toString();
    item.dataset.day = when?.toLocaleDateString([], { dateStyle: "medium" }) ?? "";
    return item;
  }

  /** Marks the first message of each day, which shows the day above it. */
  private separateDays() {
    let day = "";
    for (const item of this.list.children) {
      const element = item as HTMLElement;
      const starts = element.dataset.day !== day;
      element.classList.toggle("new-day", starts);
      day = element.dataset.day ?? "";
    }
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
    this.separateDays();
    this.presence.message(message.fromUserId, message.id, message.createdAt);
    if (message.id > this.newest) {
      this.newest = message.id;
      this.onNewest(message);
      this.markSoon();
    }
    if (atBottom) {
      this.list.scrollTop = this.list.scrollHeight;
    }
  }

  private prepend(message: Message) {
    this.list.prepend(this.render(message));
    this.separateDays();
  }
}
