//! Arrangements that many tests start from.

use crate::services::{TestAuth, TestChat, TestUser};

/// Two users, ada and grace, in a chat that ada created, on an auth
/// service and a chat service of their own.
pub struct TwoMembers {
    pub auth: TestAuth,
    pub chat: TestChat,
    pub ada: TestUser,
    pub grace: TestUser,
    pub chat_id: i64,
}

/// The most common arrangement: see [`TwoMembers`].
pub async fn two_members() -> TwoMembers {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let chat_id = chat.create_chat(&ada, &[&grace]).await;
    TwoMembers {
        auth,
        chat,
        ada,
        grace,
        chat_id,
    }
}
