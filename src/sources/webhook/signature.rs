//! Webhook signature schemes (being written).
