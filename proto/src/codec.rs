//! The gRPC codec of every Vakt service: prost, with small initial buffers.
//!
//! tonic's default codec gives every call and every open stream an 8 KiB encode buffer and an
//! 8 KiB decode buffer up front. A server holding ten thousand Connect streams (heartbeats of a
//! few bytes, an occasional command) kept 160 MiB in buffers it never filled. These start at
//! 512 bytes and grow as a message needs (a full software inventory grows them once, for that
//! call), so a held stream costs what it carries.

use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Initial size of a call's encode and decode buffers.
pub const INITIAL_BUFFER: usize = 512;
/// tonic's own threshold for yielding encoded data of a stream (unchanged).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// `tonic_prost::ProstCodec` with [`INITIAL_BUFFER`]-sized buffers; named by `build.rs` as the
/// codec of the generated clients and servers.
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }
}
