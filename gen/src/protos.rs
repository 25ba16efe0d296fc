// @generated
pub mod auth {
    #[cfg(feature = "auth-v1")]
    // @@protoc_insertion_point(attribute:auth.v1)
    pub mod v1 {
        include!("auth/v1/auth.v1.rs");
        // @@protoc_insertion_point(auth.v1)
    }
}
pub mod chat {
    #[cfg(feature = "chat-v1")]
    // @@protoc_insertion_point(attribute:chat.v1)
    pub mod v1 {
        include!("chat/v1/chat.v1.rs");
        // @@protoc_insertion_point(chat.v1)
    }
}