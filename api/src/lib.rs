//! Machine API: the generated gRPC client and server code for `ros.machine.v1`, shared by
//! machined (server) and rosctl (client).

/// `ros.machine.v1`: messages plus `machine_service_client` / `machine_service_server`.
pub mod machine {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("ros.machine.v1");
}

pub mod client;

/// The port machined serves the machine API on.
pub const MACHINE_API_PORT: u16 = 50000;

/// The port nodes holding the machine CA key sign other nodes' API certificates on.
pub const TRUST_PORT: u16 = 50001;

/// Full gRPC path of a MachineService method, as seen by server middleware (`/pkg.Service/Method`).
pub fn method_path(method: &str) -> String {
    format!("/ros.machine.v1.MachineService/{method}")
}

#[cfg(test)]
mod tests {
    use super::machine::*;
    use prost::Message;

    #[test]
    fn replies_round_trip_with_node_name() {
        let reply = VersionReply {
            node: "cp-1".into(),
            version: "0.1.0".into(),
            ..Default::default()
        };
        let bytes = reply.encode_to_vec();
        let back = VersionReply::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.node, "cp-1");
        assert_eq!(back.version, "0.1.0");
    }

    #[test]
    fn method_path_matches_generated_service_name() {
        assert_eq!(
            super::method_path("Reboot"),
            format!("/{}/Reboot", machine_service_server::SERVICE_NAME)
        );
    }
}
