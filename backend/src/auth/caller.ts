/** Who is calling: resolved once per request by the protected scope's preHandler. */
export interface RequestUser {
  readonly id: string;
  readonly name: string;
  readonly email: string;
}

export interface RequestCaller {
  readonly user: RequestUser;
  /** How the caller proved who it is. */
  readonly via: 'session' | 'api-key';
}
