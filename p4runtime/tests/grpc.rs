//! The tonic service code exists under the name real P4Runtime peers dial.

use talaria_p4rt::descriptor_pool;
use talaria_p4rt::p4::v1::{p4_runtime_client::P4RuntimeClient, p4_runtime_server};

#[test]
fn service_is_p4_v1_p4runtime() {
    assert_eq!(p4_runtime_server::SERVICE_NAME, "p4.v1.P4Runtime");
    // The client is generic over the transport; naming it checks it exists.
    let _ = std::any::type_name::<P4RuntimeClient<tonic::transport::Channel>>();

    let service = descriptor_pool()
        .get_service_by_name("p4.v1.P4Runtime")
        .unwrap();
    let methods: Vec<_> = service.methods().map(|m| m.name().to_owned()).collect();
    assert_eq!(
        methods,
        [
            "Write",
            "Read",
            "SetForwardingPipelineConfig",
            "GetForwardingPipelineConfig",
            "StreamChannel",
            "Capabilities"
        ]
    );
}
