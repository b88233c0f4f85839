//! podman and containerd driving carton-runtime (issue 10): private, throwaway instances of
//! each client for one scenario.
