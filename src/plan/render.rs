//! Plan rendering (placeholder, filled next).
