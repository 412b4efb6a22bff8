//! Fault injection and request statistics (owner: testbed-api helper).
