fn main() {
    std::process::exit(carton::oci::cli::main());
}
