//! Members' read markers (`chat_members.read_seq`, `read_message_id`):
//! how far each has read, by sequence number, so that what is unread is a
//! subtraction from the chat's own `last_seq`, never a count of messages.

use crate::error::Result;

/// What moving a marker came to.
pub enum Marking {
    /// The user is not a member of the chat, or there is no such chat.
    NotAMember,
    /// The chat has no such message.
    NoSuchMessage,
    Marked {
        /// The marker's sequence number now, if this call moved it.
        moved_to: Option<i64>,
        /// The marker after the call.
        read_message_id: i64,
        /// Messages after it.
        unread: i64,
    },
}

/// Moves the user's marker in the chat forward to `message_id`; a message
/// at or before it changes nothing. Concurrent calls (two devices) end at
/// the later of their messages: the update's condition is checked again
/// on the row once its lock is held.
pub async fn mark(
    db: &sqlx::PgPool,
    chat_id: i64,
    user_id: i64,
    message_id: i64,
) -> Result<Marking> {
    let row = sqlx::query!(
        r#"with me as (
               select m.read_seq, m.read_message_id, c.last_seq
               from chat_members m join chats c on c.id = m.chat_id
               where m.chat_id = $1 and m.user_id = $2
           ),
           target as (
               select seq from messages
               where chat_id = $1 and id = $3 and exists (select 1 from me)
           ),
           moved as (
               update chat_members m set read_seq = t.seq, read_message_id = $3
               from target t
               where m.chat_id = $1 and m.user_id = $2 and m.read_seq < t.seq
               returning m.read_seq
           )
           select (select last_seq from me) as "last_seq?",
                  (select read_seq from me) as "was_seq?",
                  (select read_message_id from me) as "was_id?",
                  (select seq from target) as "target_seq?",
                  (select read_seq from moved) as "moved_to?""#,
        chat_id,
        user_id,
        message_id
    )
    .fetch_one(db)
    .await?;
    let (Some(last_seq), Some(was_seq), Some(was_id)) = (row.last_seq, row.was_seq, row.was_id)
    else {
        return Ok(Marking::NotAMember);
    };
    let Some(target_seq) = row.target_seq else {
        return Ok(Marking::NoSuchMessage);
    };
    if let Some(moved_to) = row.moved_to {
        return Ok(Marking::Marked {
            moved_to: Some(moved_to),
            read_message_id: message_id,
            unread: (last_seq - moved_to).max(0),
        });
    }
    if target_seq <= was_seq {
        return Ok(Marking::Marked {
            moved_to: None,
            read_message_id: was_id,
            unread: (last_seq - was_seq).max(0),
        });
    }
    // Another call moved it further between this statement's snapshot and
    // its update: read where it is now.
    let now = sqlx::query!(
        r#"select m.read_seq, m.read_message_id, c.last_seq
           from chat_members m join chats c on c.id = m.chat_id
           where m.chat_id = $1 and m.user_id = $2"#,
        chat_id,
        user_id
    )
    .fetch_optional(db)
    .await?;
    Ok(match now {
        Some(now) => Marking::Marked {
            moved_to: None,
            read_message_id: now.read_message_id,
            unread: (now.last_seq - now.read_seq).max(0),
        },
        None => Marking::NotAMember,
    })
}
