//! A failed request as the wire reports it: a code (docs/PROTOCOL.md), a message, and for
//! code 10 the stream's current version. Every error of the layers below maps here, in one
//! place.

use crate::error::JournalError;
use crate::protocol::{code, Response};
use crate::stream::StreamError;

/// A request failure, as the wire reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
    pub current_version: Option<i64>,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            current_version: None,
        }
    }

    /// The error reply.
    pub fn response(self) -> Response {
        Response::Error {
            code: self.code,
            message: self.message,
            current_version: self.current_version,
        }
    }
}

/// The wire code of a journal failure.
fn journal_code(e: &JournalError) -> u16 {
    match e {
        JournalError::DiskFull { .. } => code::DISK_FULL,
        JournalError::TooLarge { .. } | JournalError::InvalidRecord(_) => code::INVALID_ARGUMENT,
        JournalError::Closed => code::SHUTTING_DOWN,
        // History deleted by retention: the request asked for what no longer exists.
        JournalError::Truncated { .. } => code::INVALID_ARGUMENT,
        _ => code::PARTITION_UNAVAILABLE,
    }
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        ApiError::new(journal_code(&e), e.to_string())
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        let code = match &e {
            StreamError::Journal(j) => journal_code(j),
            StreamError::WrongExpectedVersion { current, .. } => {
                return ApiError {
                    code: code::WRONG_EXPECTED_VERSION,
                    message: e.to_string(),
                    current_version: Some(*current),
                }
            }
            StreamError::StreamNotFound(_)
            | StreamError::Group(crate::stream::GroupError::NoStream) => code::STREAM_NOT_FOUND,
            StreamError::Group(crate::stream::GroupError::NoGroup) => code::NO_GROUP,
            StreamError::Group(crate::stream::GroupError::GroupExists) => code::GROUP_EXISTS,
            StreamError::Group(crate::stream::GroupError::Full { .. }) => code::GROUPS_FULL,
            StreamError::Group(crate::stream::GroupError::NameTooLong) => code::INVALID_ARGUMENT,
            StreamError::Unreadable(_) => code::PARTITION_UNAVAILABLE,
            StreamError::EmptyStreamName
            | StreamError::NoEvents
            | StreamError::BadExpectedVersion(_)
            | StreamError::DuplicateEventId(_)
            | StreamError::NotARetry { .. }
            | StreamError::Aggregate(_)
            | StreamError::IdNotAbove { .. }
            | StreamError::IdZero
            | StreamError::SetIdRefused(_)
            | StreamError::WrongType { .. }
            | StreamError::ReplyTooLarge { .. }
            | StreamError::SetTooLarge { .. }
            | StreamError::IdsExhausted { .. }
            | StreamError::WindowBeforeRing { .. } => code::INVALID_ARGUMENT,
        };
        ApiError::new(code, e.to_string())
    }
}
