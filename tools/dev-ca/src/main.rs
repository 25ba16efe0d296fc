//! `dev-ca DIR [HOST...]`: writes a development CA and certificates into
//! DIR (see [`dev_ca::DevSet`]), unless they are there already. The server
//! certificate names `localhost`, `127.0.0.1` and every HOST (the compose
//! services' names, say); everything is valid for a year. For development
//! and tests only.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: dev-ca DIR [HOST...]");
        return std::process::ExitCode::from(2);
    };
    let hosts: Vec<String> = args
        .map(|host| host.to_string_lossy().into_owned())
        .collect();
    match dev_ca::DevSet::in_dir(std::path::Path::new(&dir), &hosts, 365) {
        Ok(set) => {
            println!("{}", set.ca.display());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dev-ca: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
