//! `messages`.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: i64,
    pub chat_id: i64,
    pub seq: i64,
    pub from_user_id: i64,
    pub from_username: String,
    pub text: String,
    pub created_at: OffsetDateTime,
    /// The chat's members version when the message was stored (or, read
    /// back later, now): a stream whose user was a member at an older one
    /// asks again before passing the message on.
    pub members_version: i64,
}

pub struct NewMessage<'a> {
    pub chat_id: i64,
    pub from_user_id: i64,
    pub from_username: &'a str,
    pub text: &'a str,
    pub client_message_id: Option<&'a str>,
}

/// What a send came to.
pub enum Sent {
    /// Stored now, as the chat's next message.
    Stored(MessageRow),
    /// The sender's earlier message with the same idempotency key; nothing
    /// was stored.
    Earlier(MessageRow),
}

/// Stores `message` as its chat's next, in one statement and so one
/// transaction, one round trip: the chat's row lock, taken by the sequence
/// number's update, orders the chat's messages until the commit. `None`
/// if the chat does not exist or the sender is not a member. With an
/// idempotency key the sender already used in the chat, nothing is stored
/// and the earlier message comes back. The sender's read marker moves to
/// the message stored.
#[tracing::instrument(
    name = "store message",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql")
)]
pub async fn send(db: &sqlx::PgPool, message: NewMessage<'_>) -> Result<Option<Sent>> {
    // Two sends with one new key at once: the second fails on the key's
    // unique index (storing nothing, its sequence number update undone
    // with it), and on a second try finds the first's message. A send
    // that waited for the chat's lock while a member was removed stores
    // nothing either: tried again, it sees the members as they are now.
    match send_once(db, &message).await {
        Err(sqlx::Error::Database(error))
            if error.constraint() == Some("messages_client_message_id_key") =>
        {
            Ok(send_once(db, &message).await?)
        }
        Ok(None) => Ok(send_once(db, &message).await?),
        sent => Ok(sent?),
    }
}

async fn send_once(
    db: &sqlx::PgPool,
    message: &NewMessage<'_>,
) -> std::result::Result<Option<Sent>, sqlx::Error> {
    let row = sqlx::query!(
        r#"with member as (
               select c.members_version from chat_members m join chats c on c.id = m.chat_id
               where m.chat_id = $1 and m.user_id = $2
           ),
           earlier as (
               select id, chat_id, seq, from_user_id, from_username, text, created_at
               from messages
               where chat_id = $1 and from_user_id = $2 and client_message_id = $5
                 and exists (select 1 from member)
           ),
           chat as (
               update chats
               set last_seq = last_seq + 1, last_activity_at = greatest(last_activity_at, now())
               where id = $1
                 -- Checked again on the row once locked: a removal that
                 -- committed meanwhile raised the version.
                 and members_version = (select members_version from member)
                 and not exists (select 1 from earlier)
               returning last_seq, members_version
           ),
           stored as (
               insert into messages (chat_id, seq, from_user_id, from_username, text, client_message_id)
               select $1, last_seq, $2, $3, $4, $5 from chat
               returning id, chat_id, seq, from_user_id, from_username, text, created_at
           ),
           -- Sending marks the chat read up to the message sent.
           marked as (
               update chat_members m set read_seq = s.seq, read_message_id = s.id
               from stored s
               where m.chat_id = $1 and m.user_id = $2 and m.read_seq < s.seq
           )
           select id as "id!", chat_id as "chat_id!", seq as "seq!",
                  from_user_id as "from_user_id!", from_username as "from_username!",
                  text as "text!", created_at as "created_at!",
                  (select members_version from chat) as "members_version!", false as "earlier!"
           from stored
           union all
           select id, chat_id, seq, from_user_id, from_username, text, created_at,
                  (select members_version from member), true
           from earlier"#,
        message.chat_id,
        message.from_user_id,
        message.from_username,
        message.text,
        message.client_message_id
    )
    // All of it, to the server's ready-for-query: the implicit transaction
    // commits after the row is sent, and a send is acknowledged only once
    // committed.
    .fetch_all(db)
    .await?
    .pop();
    Ok(row.map(|row| {
        let message = MessageRow {
            id: row.id,
            chat_id: row.chat_id,
            seq: row.seq,
            from_user_id: row.from_user_id,
            from_username: row.from_username,
            text: row.text,
            created_at: row.created_at,
            members_version: row.members_version,
        };
        if row.earlier {
            Sent::Earlier(message)
        } else {
            Sent::Stored(message)
        }
    }))
}

/// Message `id`, if it is in chat `chat_id`.
pub async fn get(db: impl PgExecutor<'_>, chat_id: i64, id: i64) -> Result<Option<MessageRow>> {
    Ok(sqlx::query_as!(
        MessageRow,
        "select m.id, m.chat_id, m.seq, m.from_user_id, m.from_username, m.text, m.created_at,
                c.members_version
         from messages m join chats c on c.id = m.chat_id
         where m.id = $1 and m.chat_id = $2",
        id,
        chat_id
    )
    .fetch_optional(db)
    .await?)
}

/// Up to `limit` messages older than `before_id`, newest first.
pub async fn page_before(
    db: impl PgExecutor<'_>,
    chat_id: i64,
    before_id: i64,
    limit: i64,
) -> Result<Vec<MessageRow>> {
    Ok(sqlx::query_as!(
        MessageRow,
        "select m.id, m.chat_id, m.seq, m.from_user_id, m.from_username, m.text, m.created_at,
                c.members_version
         from messages m join chats c on c.id = m.chat_id
         where m.chat_id = $1 and m.id < $2 order by m.id desc limit $3",
        chat_id,
        before_id,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// Up to `limit` messages after sequence number `after_seq`, oldest first.
pub async fn after_seq(
    db: impl PgExecutor<'_>,
    chat_id: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<MessageRow>> {
    Ok(sqlx::query_as!(
        MessageRow,
        "select m.id, m.chat_id, m.seq, m.from_user_id, m.from_username, m.text, m.created_at,
                c.members_version
         from messages m join chats c on c.id = m.chat_id
         where m.chat_id = $1 and m.seq > $2 order by m.seq limit $3",
        chat_id,
        after_seq,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// The sequence number of the chat's last message with an id up to
/// `message_id` (0 if none): where a replay after that id starts.
pub async fn seq_at(db: impl PgExecutor<'_>, chat_id: i64, message_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select coalesce(max(seq), 0) as "seq!" from messages where chat_id = $1 and id <= $2"#,
        chat_id,
        message_id
    )
    .fetch_one(db)
    .await?)
}

/// One send of a batch, owned: it outlives its caller.
#[derive(Debug, Clone)]
pub struct BatchedMessage {
    pub chat_id: i64,
    pub from_user_id: i64,
    pub from_username: String,
    pub text: String,
    pub client_message_id: Option<String>,
}

/// Stores a batch of sends in one transaction, committed once: what each
/// came to, in the batch's order.
///
/// The chats' rows are locked first, in the order of their ids, skipping
/// those another transaction holds (their sends are left to go alone), so
/// that a batch waits for nobody and nobody waits for it in a circle. Everything after reads with the locks
/// held: every send into these chats that committed before is seen, so an
/// idempotency key is looked up, never raced, and no sequence number is
/// taken by a message that then fails to store. Within a chat the batch's
/// messages take the next sequence numbers in the batch's order, and ids
/// rising with them. A key given twice in one batch stores one message;
/// the later send answers with it.
#[tracing::instrument(
    name = "store messages",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", batch = batch.len())
)]
pub async fn send_batch(
    db: &sqlx::PgPool,
    batch: &[BatchedMessage],
) -> std::result::Result<Vec<Batched>, sqlx::Error> {
    let chat_ids: Vec<i64> = batch.iter().map(|m| m.chat_id).collect();
    let user_ids: Vec<i64> = batch.iter().map(|m| m.from_user_id).collect();
    let usernames: Vec<String> = batch.iter().map(|m| m.from_username.clone()).collect();
    let texts: Vec<String> = batch.iter().map(|m| m.text.clone()).collect();
    let keys: Vec<Option<String>> = batch.iter().map(|m| m.client_message_id.clone()).collect();

    let mut tx = db.begin().await?;
    // Rows another transaction holds are skipped, not waited for: a chat
    // busy for long (a deletion through many messages) holds up only its
    // own sends, which go alone.
    let locked: Vec<i64> = sqlx::query_scalar!(
        "select id from chats where id = any($1) order by id for update skip locked",
        &chat_ids
    )
    .fetch_all(&mut *tx)
    .await?;
    let rows = sqlx::query!(
        r#"with input as (
               select * from unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[])
                   with ordinality as i(chat_id, user_id, username, text, key, ord)
           ),
           member as (
               select i.ord from input i
               join chat_members m on m.chat_id = i.chat_id and m.user_id = i.user_id
               where i.chat_id = any($6)
           ),
           earlier as (
               select i.ord, e.id, e.chat_id, e.seq, e.from_user_id, e.from_username, e.text,
                      e.created_at
               from input i join member using (ord)
               join messages e on e.chat_id = i.chat_id and e.from_user_id = i.user_id
                              and e.client_message_id = i.key
           ),
           fresh as (
               select i.*, row_number() over (partition by i.chat_id order by i.ord) as rn
               from input i join member using (ord)
               where not exists (select 1 from earlier e where e.ord = i.ord)
                 and (i.key is null or not exists (
                     select 1 from input j
                     where j.chat_id = i.chat_id and j.user_id = i.user_id and j.key = i.key
                       and j.ord < i.ord))
           ),
           counts as (select chat_id, count(*) as n from fresh group by chat_id),
           chat as (
               update chats c
               set last_seq = c.last_seq + k.n,
                   last_activity_at = greatest(c.last_activity_at, now())
               from counts k where c.id = k.chat_id
               returning c.id, c.last_seq - k.n as base, c.members_version
           ),
           stored as (
               insert into messages (chat_id, seq, from_user_id, from_username, text, client_message_id)
               select f.chat_id, c.base + f.rn, f.user_id, f.username, f.text, f.key
               from fresh f join chat c on c.id = f.chat_id
               order by f.chat_id, f.rn
               returning id, chat_id, seq, from_user_id, from_username, text, created_at
           ),
           -- Sending marks the chat read up to the sender's last message.
           marked as (
               update chat_members m set read_seq = s.seq, read_message_id = s.id
               from (select distinct on (chat_id, from_user_id) chat_id, from_user_id, seq, id
                     from stored order by chat_id, from_user_id, seq desc) s
               where m.chat_id = s.chat_id and m.user_id = s.from_user_id and m.read_seq < s.seq
           ),
           placed as (
               select f.ord, s.id, s.chat_id, s.seq, s.from_user_id, s.from_username, s.text,
                      s.created_at, c.members_version
               from fresh f join chat c on c.id = f.chat_id
               join stored s on s.chat_id = f.chat_id and s.seq = c.base + f.rn
           )
           select ord as "ord!", id as "id!", chat_id as "chat_id!", seq as "seq!",
                  from_user_id as "from_user_id!", from_username as "from_username!",
                  text as "text!", created_at as "created_at!",
                  members_version as "members_version!", false as "earlier!"
           from placed
           union all
           select e.ord, e.id, e.chat_id, e.seq, e.from_user_id, e.from_username, e.text,
                  e.created_at, (select members_version from chats where id = e.chat_id), true
           from earlier e
           union all
           select i.ord, p.id, p.chat_id, p.seq, p.from_user_id, p.from_username, p.text,
                  p.created_at, p.members_version, true
           from input i join member using (ord)
           join fresh f on f.chat_id = i.chat_id and f.user_id = i.user_id and f.key = i.key
                       and f.ord < i.ord
           join placed p on p.ord = f.ord
           where not exists (select 1 from earlier e where e.ord = i.ord)"#,
        &chat_ids,
        &user_ids,
        &usernames,
        &texts,
        &keys as &[Option<String>],
        &locked
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut outcomes: Vec<Batched> = batch
        .iter()
        .map(|message| {
            if locked.contains(&message.chat_id) {
                Batched::Done(None)
            } else {
                Batched::Skipped
            }
        })
        .collect();
    for row in rows {
        let message = MessageRow {
            id: row.id,
            chat_id: row.chat_id,
            seq: row.seq,
            from_user_id: row.from_user_id,
            from_username: row.from_username,
            text: row.text,
            created_at: row.created_at,
            members_version: row.members_version,
        };
        let Some(slot) = usize::try_from(row.ord - 1)
            .ok()
            .and_then(|at| outcomes.get_mut(at))
        else {
            continue;
        };
        *slot = Batched::Done(Some(if row.earlier {
            Sent::Earlier(message)
        } else {
            Sent::Stored(message)
        }));
    }
    Ok(outcomes)
}

/// What a batch made of one of its sends.
pub enum Batched {
    /// Stored or answered (`None`: no such chat, or not a member).
    Done(Option<Sent>),
    /// Its chat's row was locked by another transaction, or there is no
    /// such chat: the batch left it, to be sent alone.
    Skipped,
}
