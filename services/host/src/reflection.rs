//! gRPC server reflection, so that grpcurl and other tools can list and
//! call every RPC without the proto files. Both protocol versions are
//! served: v1, and v1alpha for older clients (grpcurl 1.8 speaks only that).

use tonic::service::RoutesBuilder;

/// Adds reflection over `descriptor_sets` (encoded, self-contained
/// `FileDescriptorSet`s, as `api` generates them) and over the health
/// service's own descriptors.
pub fn add_reflection(
    routes: &mut RoutesBuilder,
    descriptor_sets: &[&'static [u8]],
) -> Result<(), tonic_reflection::server::Error> {
    let builder = || {
        descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    routes.add_service(builder().build_v1()?);
    routes.add_service(builder().build_v1alpha()?);
    Ok(())
}
