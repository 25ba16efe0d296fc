//! Rules of the contracts themselves, read from the generated descriptors.

use prost_reflect::{DescriptorPool, Value};

/// prost-validate's derived validator compiles a `pattern` rule's regular
/// expression on every call it validates, so no rule may set one: such
/// fields are checked by the services' domain types. (The code generator
/// refuses them too; this holds the checked-in descriptors to it.)
#[test]
fn no_validation_rule_compiles_a_regular_expression() {
    let mut fields = 0;
    for set in [
        api::auth::v1::FILE_DESCRIPTOR_SET,
        api::chat::v1::FILE_DESCRIPTOR_SET,
    ] {
        let pool = DescriptorPool::decode(set).expect("a valid descriptor set");
        let rules = pool
            .get_extension_by_name("validate.rules")
            .expect("the contracts use validate.rules");
        for message in pool.all_messages() {
            if !matches!(message.package_name(), "auth.v1" | "chat.v1") {
                continue;
            }
            for field in message.fields() {
                let options = field.options();
                if !options.has_extension(&rules) {
                    continue;
                }
                fields += 1;
                assert!(
                    !sets_pattern(&options.get_extension(&rules)),
                    "{} has a `pattern` rule",
                    field.full_name()
                );
            }
        }
    }
    assert!(fields > 10, "only {fields} fields with rules were found");
}

fn sets_pattern(value: &Value) -> bool {
    match value {
        Value::Message(message) => message
            .fields()
            .any(|(field, value)| field.name() == "pattern" || sets_pattern(value)),
        Value::List(values) => values.iter().any(sets_pattern),
        _ => false,
    }
}
