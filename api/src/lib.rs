//! Machine API: generated gRPC client and server code.
