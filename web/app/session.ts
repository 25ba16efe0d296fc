// A logged-in session: the access token is kept in memory only, and
// refreshed with the (rotating) refresh token before it expires.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../gen/ts/auth/v1/auth_pb";
import { UserService } from "../../gen/ts/auth/v1/user_pb";

/** Refresh this long before the access token expires. */
const REFRESH_MARGIN_MS = 30_000;

/** The claims of an access token the page uses. */
interface Claims {
  sub: string;
  name: string;
  exp: number;
}

function claimsOf(token: string): Claims {
  const payload = token.split(".")[1] ?? "";
  const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
  return JSON.parse(json) as Claims;
}

export class Session {
  readonly userId: bigint;
  readonly username: string;
  private accessToken: string;
  private refreshToken: string;
  private expiresAt: number;
  private refreshing: Promise<void> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Told when the session can no longer be refreshed. */
  onExpired: (reason: unknown) => void = () => {};

  private constructor(
    private readonly auth: Client<typeof AuthService>,
    accessToken: string,
    refreshToken: string,
  ) {
    const claims = claimsOf(accessToken);
    this.userId = BigInt(claims.sub);
    this.username = claims.name;
    this.accessToken = accessToken;
    this.refreshToken = refreshToken;
    this.expiresAt = claims.exp * 1000;
    this.schedule();
  }

  static async login(authUrl: string, username: string, password: string): Promise<Session> {
    const auth = createClient(AuthService, transport(authUrl));
    const tokens = await auth.login({ username, password });
    return new Session(auth, tokens.accessToken, tokens.refreshToken);
  }

  /** Registers a user; logging in is separate. */
  static async register(authUrl: string, name: string, email: string, password: string) {
    const users = createClient(UserService, transport(authUrl));
    await users.create({ name, email, password, passwordConfirm: password });
  }

  /** A current access token, refreshed first if it is about to expire. */
  async token(): Promise<string> {
    if (Date.now() > this.expiresAt - REFRESH_MARGIN_MS / 3) {
      await this.refresh();
    }
    return this.accessToken;
  }

  /** Adds `authorization` to every call through a transport. */
  readonly authorize: Interceptor = (next) => async (request) => {
    request.header.set("authorization", `Bearer ${await this.token()}`);
    return next(request);
  };

  /** Trades the refresh token for a new one, then for an access token. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const rotated = await this.auth.getRefreshToken({ refreshToken: this.refreshToken });
        this.refreshToken = rotated.refreshToken;
        const access = await this.auth.getAccessToken({ refreshToken: this.refreshToken });
        this.accessToken = access.accessToken;
        this.expiresAt = claimsOf(access.accessToken).exp * 1000;
        this.schedule();
      } catch (error) {
        this.stop();
        this.onExpired(error);
        throw error;
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** Ends the session on the server and here. */
  async logout(): Promise<void> {
    this.stop();
    await this.auth.logout({ refreshToken: this.refreshToken });
  }

  private schedule() {
    clearTimeout(this.timer);
    const wait = Math.max(1_000, this.expiresAt - REFRESH_MARGIN_MS - Date.now());
    this.timer = setTimeout(() => void this.refresh().catch(() => {}), wait);
  }

  private stop() {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** gRPC-Web, binary, to one service. */
export function transport(baseUrl: string, interceptors: Interceptor[] = []) {
  return createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors });
}
