//! The untyped first packets of a connection: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage.
//! Detection uses pgwire's packet checks; the StartupMessage itself is forwarded as received (its
//! parameters are only read, in order, without pgwire's sorted, lossy map).

use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::{GssEncRequest, SslRequest};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ProxyError;
use crate::session::StartupInfo;

/// Largest first packet accepted (PostgreSQL's own limit is 10,000 bytes).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A classified first packet.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstPacket {
    /// SSLRequest.
    Ssl,
    /// GSSENCRequest.
    GssEnc,
    /// CancelRequest; `key` is everything after the request code (pid + secret, any length).
    Cancel {
        /// The whole packet, forwarded as is.
        raw: Vec<u8>,
        /// pid + secret key bytes.
        key: Vec<u8>,
    },
    /// StartupMessage (protocol 3.x): the raw packet and the parameters the proxy reads.
    Startup {
        /// The whole packet, forwarded as is.
        raw: Vec<u8>,
        /// Parameters in the order sent.
        params: Vec<(String, String)>,
    },
}

impl FirstPacket {
    /// The parameters the session needs.
    pub fn startup_info(params: &[(String, String)]) -> StartupInfo {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        StartupInfo { application_name: get("application_name"), options: get("options") }
    }
}

/// Classifies a complete first packet (length prefix included).
pub fn classify(packet: &[u8]) -> Result<FirstPacket, ProxyError> {
    if packet.len() < 8 {
        return Err(ProxyError::Protocol("startup packet too short".into()));
    }
    if SslRequest::is_ssl_request_packet(packet) {
        return Ok(FirstPacket::Ssl);
    }
    if GssEncRequest::is_gss_enc_request_packet(packet) {
        return Ok(FirstPacket::GssEnc);
    }
    if CancelRequest::is_cancel_request_packet(packet) {
        if packet.len() < 16 {
            return Err(ProxyError::Protocol("cancel request too short".into()));
        }
        return Ok(FirstPacket::Cancel { raw: packet.to_vec(), key: packet[8..].to_vec() });
    }
    let major = u16::from_be_bytes([packet[4], packet[5]]);
    if major != 3 {
        return Err(ProxyError::Protocol(format!("unsupported frontend protocol {major}")));
    }
    let mut params = Vec::new();
    let mut rest = &packet[8..];
    while let Some((name, tail)) = crate::frame::cstr(rest) {
        if name.is_empty() {
            break;
        }
        let (value, tail) =
            crate::frame::cstr(tail).ok_or_else(|| ProxyError::Protocol("malformed startup packet".into()))?;
        params.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned()));
        rest = tail;
    }
    Ok(FirstPacket::Startup { raw: packet.to_vec(), params })
}

/// Reads one untyped packet (length-prefixed) from `r`.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ProxyError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let n = i32::from_be_bytes(len);
    let n = usize::try_from(n).unwrap_or(0);
    if !(8..=MAX_STARTUP_LEN).contains(&n) {
        return Err(ProxyError::Protocol(format!("invalid startup packet length {n}")));
    }
    let mut buf = vec![0u8; n];
    buf[..4].copy_from_slice(&len);
    r.read_exact(&mut buf[4..]).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut p = ((8 + body.len()) as i32).to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn classifies_first_packets() {
        assert_eq!(classify(&packet(80877103, b"")).unwrap(), FirstPacket::Ssl);
        assert_eq!(classify(&packet(80877104, b"")).unwrap(), FirstPacket::GssEnc);
        let c = packet(80877102, &[0, 0, 0, 7, 1, 2, 3, 4]);
        assert_eq!(classify(&c).unwrap(), FirstPacket::Cancel { raw: c.clone(), key: vec![0, 0, 0, 7, 1, 2, 3, 4] });
        let s = packet(196608, b"user\0me\0application_name\0psql\0options\0-c a.b=1\0\0");
        let FirstPacket::Startup { params, .. } = classify(&s).unwrap() else { panic!() };
        let info = FirstPacket::startup_info(&params);
        assert_eq!(info.application_name.as_deref(), Some("psql"));
        assert_eq!(info.options.as_deref(), Some("-c a.b=1"));
        assert!(classify(&packet(0x0002_0000, b"")).is_err());
        assert!(classify(&packet(196608, b"user\0me")).is_err());
    }
}
