//! A protoc plugin, run by `buf generate`, that writes prost message code in
//! the layout `protoc-gen-prost` uses (one `<package>.rs` per package, ending
//! with the `module` insertion point that `protoc-gen-tonic` fills), with
//! prost-validate's `Validator` derived from the `validate.rules` options.
//!
//! `protoc-gen-prost` cannot do this itself: decoding the request into
//! `prost_types` drops the custom options. Here the raw descriptors are also
//! decoded into a `prost_reflect::DescriptorPool`, which keeps them, and
//! `prost_validate_build` turns them into attributes on the prost config.
//!
//! `pattern` rules are refused: the validator prost-validate derives
//! compiles a rule's regular expression on every call. A field with a
//! pattern is checked by hand in the service's domain types instead.
//!
//! Options (`opt:` in `buf.gen.yaml`):
//! - `file_descriptor_set`: append `FILE_DESCRIPTOR_SET`, the encoded
//!   descriptors of the package's files and everything they import, as gRPC
//!   server reflection needs them.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, Read, Write};

use prost::Message;
use prost_types::FileDescriptorProto;
use prost_types::compiler::code_generator_response::{Feature, File};
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};
use protoc_gen_prost::ModuleRequestSet;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The request with each `proto_file` left encoded, so that nothing in it is
/// lost to decoding (field 15 of `CodeGeneratorRequest`).
#[derive(Clone, PartialEq, Message)]
struct RawRequest {
    #[prost(bytes = "vec", repeated, tag = "15")]
    proto_file: Vec<Vec<u8>>,
}

/// `google.protobuf.FileDescriptorSet` over still-encoded files.
#[derive(Clone, PartialEq, Message)]
struct RawFileDescriptorSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

struct Options {
    file_descriptor_set: bool,
}

impl Options {
    fn parse(parameter: &str) -> Result<Self, Error> {
        let mut options = Options {
            file_descriptor_set: false,
        };
        for option in parameter
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            match option {
                "file_descriptor_set" | "file_descriptor_set=true" => {
                    options.file_descriptor_set = true;
                }
                "file_descriptor_set=false" => options.file_descriptor_set = false,
                other => return Err(format!("unknown option `{other}`").into()),
            }
        }
        Ok(options)
    }
}

fn main() -> io::Result<()> {
    if std::env::args().any(|arg| arg == "--version") {
        println!(env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let mut raw = Vec::new();
    io::stdin().read_to_end(&mut raw)?;

    let response = match generate(&raw) {
        Ok(file) => CodeGeneratorResponse {
            file,
            supported_features: Some(Feature::Proto3Optional as u64),
            ..Default::default()
        },
        Err(error) => CodeGeneratorResponse {
            error: Some(error.to_string()),
            supported_features: Some(Feature::Proto3Optional as u64),
            ..Default::default()
        },
    };
    io::stdout().write_all(&response.encode_to_vec())
}

fn generate(raw: &[u8]) -> Result<Vec<File>, Error> {
    let request = CodeGeneratorRequest::decode(raw)?;
    let options = Options::parse(request.parameter())?;
    let raw_files = RawRequest::decode(raw)?.proto_file;

    let pool = prost_reflect::DescriptorPool::decode(
        RawFileDescriptorSet {
            file: raw_files.clone(),
        }
        .encode_to_vec()
        .as_slice(),
    )?;
    refuse_patterns(&pool, &request.file_to_generate)?;
    let mut config = prost_build::Config::new();
    prost_validate_build::Builder::new().annotate(&mut config, &pool);

    let modules = ModuleRequestSet::new(
        request.file_to_generate.clone(),
        request.proto_file.clone(),
        raw,
        None,
        false,
    )?;
    let mut generated = config.generate(
        modules
            .requests()
            .flat_map(|(module, request)| {
                request.files().map(|file| (module.clone(), file.clone()))
            })
            .collect(),
    )?;

    let mut files = Vec::new();
    for (module, module_request) in modules.requests() {
        let Some(name) = module_request.output_filepath() else {
            continue;
        };
        let mut content = String::from("// @generated\n");
        content.push_str(&generated.remove(module).unwrap_or_default());
        if options.file_descriptor_set {
            let roots: Vec<&str> = module_request
                .files()
                .map(FileDescriptorProto::name)
                .collect();
            let set = RawFileDescriptorSet {
                file: with_imports(&roots, &request.proto_file, &raw_files)?,
            };
            push_descriptor_set(
                &mut content,
                module_request.proto_package_name(),
                &set.encode_to_vec(),
            );
        }
        content.push_str("// @@protoc_insertion_point(module)\n");
        files.push(File {
            name: Some(name),
            content: Some(content),
            ..Default::default()
        });
    }
    Ok(files)
}

/// Fails on any `validate.rules` of the generated files that sets a
/// `pattern`, at any depth (`repeated.items.string.pattern` too).
fn refuse_patterns(
    pool: &prost_reflect::DescriptorPool,
    generated: &[String],
) -> Result<(), Error> {
    let Some(rules) = pool.get_extension_by_name("validate.rules") else {
        return Ok(());
    };
    for message in pool.all_messages() {
        if !generated
            .iter()
            .any(|file| file == message.parent_file().name())
        {
            continue;
        }
        for field in message.fields() {
            let options = field.options();
            if options.has_extension(&rules) && sets_pattern(&options.get_extension(&rules)) {
                return Err(format!(
                    "{}: `pattern` rules compile a regular expression on every call; \
                     check the field in the service's domain types instead",
                    field.full_name()
                )
                .into());
            }
        }
    }
    Ok(())
}

fn sets_pattern(value: &prost_reflect::Value) -> bool {
    use prost_reflect::Value;
    match value {
        Value::Message(message) => message
            .fields()
            .any(|(field, value)| field.name() == "pattern" || sets_pattern(value)),
        Value::List(values) => values.iter().any(sets_pattern),
        _ => false,
    }
}

/// The encoded files named by `roots` and everything they import, imports
/// first, in the order the request lists them (which is dependency order);
/// imported files lose their source info.
fn with_imports(
    roots: &[&str],
    files: &[FileDescriptorProto],
    raw: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, Error> {
    let mut wanted: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = roots.to_vec();
    while let Some(name) = stack.pop() {
        if wanted.insert(name)
            && let Some(file) = files.iter().find(|file| file.name() == name)
        {
            stack.extend(file.dependency.iter().map(String::as_str));
        }
    }
    files
        .iter()
        .zip(raw)
        .filter(|(file, _)| wanted.contains(file.name()))
        .map(|(file, raw)| {
            if roots.contains(&file.name()) {
                Ok(raw.clone())
            } else {
                without_source_info(raw)
            }
        })
        .collect()
}

fn push_descriptor_set(content: &mut String, package: &str, bytes: &[u8]) {
    let _ = writeln!(
        content,
        "/// Encoded `FileDescriptorSet` of the `{package}` package and all it imports, for gRPC reflection."
    );
    content.push_str("pub const FILE_DESCRIPTOR_SET: &[u8] = b\"\\\n");
    for line in bytes.chunks(96) {
        for (i, byte) in line.iter().enumerate() {
            match byte {
                // A line continuation swallows the next line's leading spaces.
                b' ' if i == 0 => content.push_str("\\x20"),
                b'"' => content.push_str("\\\""),
                b'\\' => content.push_str("\\\\"),
                0x20..=0x7e => content.push(char::from(*byte)),
                _ => {
                    let _ = write!(content, "\\x{byte:02x}");
                }
            }
        }
        content.push_str("\\\n");
    }
    content.push_str("\";\n");
}

/// An encoded `FileDescriptorProto` without its `source_code_info` (field
/// 9): imported files' comments are of no use to reflection clients and
/// would triple the size of the generated code. Works on the wire format so
/// that the files' custom options survive.
fn without_source_info(mut file: &[u8]) -> Result<Vec<u8>, Error> {
    use prost::encoding::{DecodeContext, decode_key, skip_field};
    const SOURCE_CODE_INFO: u32 = 9;
    let mut kept = Vec::with_capacity(file.len());
    while !file.is_empty() {
        let start = file;
        let (tag, wire_type) = decode_key(&mut file)?;
        skip_field(wire_type, tag, &mut file, DecodeContext::default())?;
        if tag != SOURCE_CODE_INFO {
            kept.extend_from_slice(&start[..start.len() - file.len()]);
        }
    }
    Ok(kept)
}
