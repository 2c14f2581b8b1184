//! Cases: list.

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_list {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args list: [] }
    };
}
