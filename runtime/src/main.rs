fn main() {
    std::process::exit(carton::cli::main());
}
