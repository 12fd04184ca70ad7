//! `tower` layers (feature `tower`).
