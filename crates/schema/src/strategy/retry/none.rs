//! `none`: every failure is final, as Django's defaults leave it.

use super::Failure;
use std::time::Duration;

pub fn pause(_: &Failure) -> Option<Duration> {
    None
}
