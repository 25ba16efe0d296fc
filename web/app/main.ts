// The web client: log in or register, see your chats, open one, and chat
// live; recover an account with the links mails carry. Every request and
// response type comes from the code generated from the protos (gen/ts);
// calls go over gRPC-Web.
import { Code, createClient, type Client } from "@connectrpc/connect";
import { AuthService } from "../../gen/ts/auth/v1/auth_pb";
import { UserService } from "../../gen/ts/auth/v1/user_pb";
import { ChatRole, ChatService, type ChatSummary, type Member } from "../../gen/ts/chat/v1/chat_pb";
import { Conversation } from "./conversation";
import { Presence } from "./presence";
import { mailLink, Recovery } from "./recovery";
import { SessionsView } from "./sessions";
import { byId, el, names, value } from "./dom";
import { codeOf, describe } from "./errors";
import { type SecondFactorDue, Session, transport } from "./session";

/** Where the services are, as the server that serves this page says. */
interface Config {
  authUrl: string;
  chatUrl: string;
}

/** How often the chat list is read again while nothing else asks. */
const LIST_EVERY_MS = 5_000;

let config: Config;
let session: Session | undefined;
let chats: Client<typeof ChatService>;
let sessionsView: SessionsView | undefined;
let recovery: Recovery;
let secondFactorDue: SecondFactorDue | undefined;
let open: Conversation | undefined;
let listed: ChatSummary[] = [];
let nextChatsPage = "";
let listTimer: ReturnType<typeof setInterval> | undefined;

function showError(error: unknown) {
  byId("error").textContent = error === undefined ? "" : describe(error);
}

/** Runs `action` for a form or button, showing what fails as one line. */
function on(id: string, event: "submit" | "click", action: () => Promise<void>) {
  byId(id).addEventListener(event, (e) => {
    e.preventDefault();
    showError(undefined);
    action().catch(showError);
  });
}

async function loggedIn(started: Session) {
  session = started;
  session.onExpired = (reason) => {
    loggedOut();
    showError(reason);
  };
  chats = createClient(ChatService, transport(config.chatUrl, [session.authorize]));
  const auth = createClient(AuthService, transport(config.authUrl, [session.authorize]));
  sessionsView = new SessionsView(
    auth,
    byId<HTMLUListElement>("session-list"),
    byId("sessions-status"),
    showError,
  );
  const users = createClient(UserService, transport(config.authUrl, [session.authorize]));
  void recovery.signedIn(session.userId, auth, users).catch(showError);
  byId("me").textContent = `${session.username} (id ${session.userId})`;
  byId("logout").hidden = false;
  byId("sessions").hidden = false;
  byId("auth-view").hidden = true;
  byId("app-view").hidden = false;
  await refreshChats();
  listTimer = setInterval(() => void refreshChats().catch(showError), LIST_EVERY_MS);
}

/** Leaves the second-factor step: the login form again, nothing kept. */
function backToPassword() {
  secondFactorDue = undefined;
  byId<HTMLFormElement>("code-form").reset();
  byId("code-form").hidden = true;
  byId<HTMLInputElement>("login-password").value = "";
  byId("login-form").hidden = false;
}

function loggedOut() {
  clearInterval(listTimer);
  closeChat();
  session = undefined;
  sessionsView?.reset();
  sessionsView = undefined;
  recovery.reset();
  listed = [];
  byId("chat-list").replaceChildren();
  backToPassword();
  byId("me").textContent = "";
  byId("logout").hidden = true;
  byId("sessions").hidden = true;
  byId("sessions-view").hidden = true;
  byId("auth-view").hidden = false;
  byId("app-view").hidden = true;
}

/** Follows a link from a mail that the page's hash carries: verifies an
 * address at once (whoever is logged in stays so), or shows the form for
 * a new password in place of the rest of the page. */
async function followLink() {
  const link = mailLink(location.hash);
  if (link?.kind === "verify") {
    await recovery.verify(link.token);
  } else if (link?.kind === "reset") {
    byId("auth-view").hidden = true;
    byId("app-view").hidden = true;
    byId("sessions-view").hidden = true;
    recovery.showReset(link.token);
  }
}

/** Leaves the new-password form for the page as it was: chats, or the
 * login. */
function closeReset() {
  recovery.closeReset();
  byId("auth-view").hidden = session !== undefined;
  byId("app-view").hidden = session === undefined;
}

/** The first page of chats again (and any pages already shown). */
async function refreshChats() {
  const pages = Math.max(1, Math.ceil(listed.length / 50));
  const fresh: ChatSummary[] = [];
  let token = "";
  for (let page = 0; page < pages; page++) {
    const answer = await chats.listChats({ pageSize: 50, pageToken: token });
    fresh.push(...answer.chats);
    token = answer.nextPageToken;
    if (token === "") {
      break;
    }
  }
  listed = fresh;
  nextChatsPage = token;
  renderChats();
}

async function moreChats() {
  const answer = await chats.listChats({ pageSize: 50, pageToken: nextChatsPage });
  listed.push(...answer.chats);
  nextChatsPage = answer.nextPageToken;
  renderChats();
}

function renderChats() {
  const items = listed.map((chat) => {
    const last = chat.lastMessage
      ? `${chat.lastMessage.fromUsername}: ${chat.lastMessage.text}`
      : "no messages yet";
    const badge = el("span", "badge", chat.unreadCount.toString());
    badge.hidden = chat.unreadCount === 0n;
    const button = el(
      "button",
      open?.chatId === chat.id ? "open" : "",
      el("strong", "title", chat.title),
      badge,
      el("span", "last", last),
    );
    button.type = "button";
    button.setAttribute(
      "aria-label",
      `${chat.title}, ${chat.memberCount} members` +
        (chat.unreadCount > 0n ? `, ${chat.unreadCount} unread` : ""),
    );
    button.dataset.chatId = chat.id.toString();
    button.addEventListener("click", () => {
      showError(undefined);
      openChat(chat.id).catch(showError);
    });
    return el("li", "", button);
  });
  byId("chat-list").replaceChildren(...items);
  byId("more-chats").hidden = nextChatsPage === "";
}

function closeChat() {
  open?.close();
  open = undefined;
  byId("chat-view").hidden = true;
  byId("messages").replaceChildren();
  byId("members").replaceChildren();
  byId("seen-by").textContent = "";
  byId("typing").textContent = "";
}

async function openChat(chatId: bigint) {
  closeChat();
  byId("chat-view").hidden = false;
  byId("chat-status").className = "";
  if (!session) return;
  const presence = new Presence(session.userId, byId("seen-by"), byId("typing"), () => {
    // A member added since the chat was opened: their name, and when they
    // joined, for "seen by" and typing.
    void showChat(chatId)
      .then((members) => {
        if (open === conversation) presence.members(members);
      })
      .catch(() => presence.membersUnread());
  });
  const conversation = new Conversation(
    chats,
    chatId,
    session.userId,
    byId<HTMLOListElement>("messages"),
    (text, ended) => {
      const status = byId("chat-status");
      status.textContent = text;
      status.className = ended ? "ended" : "";
      if (ended) {
        byId<HTMLFormElement>("send-form").hidden = true;
        void refreshChats().catch(() => {});
      }
    },
    byId<HTMLButtonElement>("older"),
    presence,
    (message) => {
      // The list shows the newest message and the busiest chat first.
      const index = listed.findIndex((chat) => chat.id === chatId);
      const [chat] = index >= 0 ? listed.splice(index, 1) : [];
      if (chat) {
        chat.lastMessage = message;
        listed.unshift(chat);
        renderChats();
      }
    },
    (unread) => {
      const chat = listed.find((chat) => chat.id === chatId);
      if (chat) {
        chat.unreadCount = unread;
        renderChats();
      }
    },
  );
  open = conversation;
  byId<HTMLFormElement>("send-form").hidden = false;
  renderChats();
  const members = await showChat(chatId);
  // Another chat may have been opened meanwhile.
  if (open === conversation) {
    presence.members(members);
    await conversation.open();
  }
}

/** The chat's title and members, and what the caller may change; the
 * members. */
async function showChat(chatId: bigint): Promise<Member[]> {
  const { chat, role } = await chats.getChat({ id: chatId });
  // Shown only if it is still the chat open: a slow answer for one opened
  // before would mix two chats.
  if (!chat || !session || open?.chatId !== chatId) {
    return [];
  }
  const manages = role === ChatRole.CREATOR;
  byId("chat-title").textContent = chat.title;
  // Not while the person is typing a new title.
  const rename = byId<HTMLInputElement>("rename-title");
  if (document.activeElement !== rename) rename.value = chat.title;
  byId<HTMLFormElement>("rename-form").hidden = !manages;
  byId<HTMLFormElement>("add-form").hidden = !manages;
  const me = session.userId;
  const members = chat.members.map((member) => {
    const name = member.username || `user ${member.userId}`;
    const item = el("li", "", name, member.userId === chat.creatorId ? " (creator)" : "");
    if (manages && member.userId !== me) {
      const remove = el("button", "remove", "Remove");
      remove.type = "button";
      remove.dataset.userId = member.userId.toString();
      remove.addEventListener("click", () => {
        showError(undefined);
        chats
          .removeMember({ chatId, userId: member.userId })
          .then(() => showChat(chatId))
          .catch(showError);
      });
      item.append(remove);
    }
    return item;
  });
  byId("members").replaceChildren(...members);
  return chat.members;
}

async function start() {
  const answer = await fetch("/config.json");
  config = (await answer.json()) as Config;
  recovery = new Recovery(config.authUrl);

  on("login-form", "submit", async () => {
    const started = await Session.login(config.authUrl, value("login-name"), value("login-password"));
    if (started instanceof Session) {
      await loggedIn(started);
      return;
    }
    // The password was right; a code is due.
    secondFactorDue = started;
    byId("login-form").hidden = true;
    byId("code-form").hidden = false;
    byId("login-code").focus();
  });
  on("code-form", "submit", async () => {
    if (!secondFactorDue) return;
    const due = secondFactorDue;
    let session: Session;
    try {
      session = await Session.completeLogin(config.authUrl, due, value("login-code"));
    } catch (error) {
      byId<HTMLInputElement>("login-code").value = "";
      // A challenge that expired or took too many wrong codes: back to
      // the password.
      if (codeOf(error) === Code.Unauthenticated && describe(error).includes("challenge")) {
        backToPassword();
      }
      throw error;
    }
    backToPassword();
    await loggedIn(session);
  });
  on("code-cancel", "click", async () => backToPassword());
  on("forgot-password", "click", async () => recovery.askForReset());
  on("reset-request-form", "submit", () => recovery.requestReset(value("reset-email")));
  on("reset-request-cancel", "click", async () => recovery.backToLogin());
  on("reset-form", "submit", async () => {
    if (!(await recovery.resetPassword(value("reset-new-password"), value("reset-confirm-password")))) {
      return;
    }
    // The reset ended every session of its user: most likely this one.
    const ending = session;
    if (ending) {
      loggedOut();
      await ending.logout().catch(() => {});
    }
    backToPassword();
    byId("auth-view").hidden = false;
    recovery.passwordChanged();
  });
  on("reset-cancel", "click", async () => closeReset());
  on("resend-verification", "click", () => recovery.resendVerification());
  on("register-form", "submit", async () => {
    const name = value("register-name");
    const password = value("register-password");
    await Session.register(config.authUrl, name, value("register-email"), password);
    const started = await Session.login(config.authUrl, name, password);
    // A new account has no second factor.
    if (started instanceof Session) await loggedIn(started);
  });
  on("logout", "click", async () => {
    const ending = session;
    loggedOut();
    await ending?.logout();
  });
  on("sessions", "click", async () => {
    if (!sessionsView) return;
    byId("app-view").hidden = true;
    byId("sessions-view").hidden = false;
    await sessionsView.show();
  });
  on("close-sessions", "click", async () => {
    byId("sessions-view").hidden = true;
    byId("app-view").hidden = session === undefined;
  });
  on("end-other-sessions", "click", async () => {
    await sessionsView?.endOthers();
  });
  on("totp-enroll", "click", async () => {
    await sessionsView?.enrollTotp();
  });
  on("totp-confirm-form", "submit", async () => {
    await sessionsView?.confirmTotp(value("totp-code"), value("totp-password"));
  });
  on("totp-disable-form", "submit", async () => {
    await sessionsView?.disableTotp(value("totp-disable-password"), value("totp-disable-code"));
  });
  on("create-form", "submit", async () => {
    const created = await chats.create({
      title: value("create-title"),
      usernames: names(value("create-users")),
    });
    byId<HTMLFormElement>("create-form").reset();
    await refreshChats();
    await openChat(created.id);
  });
  on("refresh-chats", "click", refreshChats);
  on("more-chats", "click", moreChats);
  on("rename-form", "submit", async () => {
    if (!open) return;
    await chats.updateChat({ id: open.chatId, title: value("rename-title") });
    await showChat(open.chatId);
    await refreshChats();
  });
  on("add-form", "submit", async () => {
    if (!open) return;
    await chats.addMembers({ chatId: open.chatId, usernames: names(value("add-users")) });
    byId<HTMLFormElement>("add-form").reset();
    await showChat(open.chatId);
  });
  on("leave", "click", async () => {
    if (!open || !session) return;
    await chats.removeMember({ chatId: open.chatId, userId: session.userId });
    closeChat();
    await refreshChats();
  });
  on("older", "click", async () => {
    await open?.older();
  });
  byId("message-text").addEventListener("input", () => open?.typing());
  on("send-form", "submit", async () => {
    if (!open) return;
    const input = byId<HTMLInputElement>("message-text");
    const text = input.value;
    input.value = "";
    try {
      await open.send(text);
    } catch (error) {
      input.value = text;
      throw error;
    }
  });
  window.addEventListener("hashchange", () => {
    showError(undefined);
    followLink().catch(showError);
  });
  await followLink();
}

start().catch(showError);
