//! Zero-copy conversion between Polars frames and arrow-rs record batches.
//!
//! Polars keeps its own Arrow implementation (polars-arrow); the Flight stack speaks arrow-rs.
//! Both implement the Arrow C Data Interface, whose structs are `#[repr(C)]` and identical, so a
//! column crosses by handing over its buffers' ownership: no bytes are copied and no IPC round
//! trip is paid. Each array is exported by one side and imported by the other; the exporter's
//! release callback frees the buffers when the importer drops them.

use std::sync::Arc;

use arrow::array::{ArrayRef as ArrowArrayRef, AsArray, RecordBatch, RecordBatchOptions, make_array};
use arrow::datatypes::DataType as ArrowDataType;
use arrow::datatypes::{Field as ArrowField, Schema, SchemaRef};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use polars::prelude::{CompatLevel, DataFrame, DataType, Series};
use polars_arrow::array::Array as PolarsArray;
use polars_arrow::datatypes::Field as PolarsField;
use polars_arrow::ffi as pffi;

use crate::error::{Error, Result};

/// The arrow-rs schema of a frame, as its batches will carry it.
pub fn arrow_schema(df: &DataFrame) -> Result<SchemaRef> {
    let fields = df
        .columns()
        .iter()
        .map(|c| field_to_arrow(&c.field().to_arrow(CompatLevel::newest())))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The frame's chunks as arrow-rs record batches, sharing its buffers.
pub fn frame_to_batches(df: &DataFrame) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = arrow_schema(df)?;
    let mut df = df.clone();
    df.align_chunks_par();
    let mut batches = Vec::new();
    if df.width() == 0 {
        let options = RecordBatchOptions::new().with_row_count(Some(df.height()));
        batches.push(RecordBatch::try_new_with_options(schema.clone(), vec![], &options)?);
        return Ok((schema, batches));
    }
    for chunk in df.iter_chunks(CompatLevel::newest(), false) {
        let height = chunk.height();
        let columns = chunk
            .into_arrays()
            .into_iter()
            .zip(schema.fields().iter())
            .map(|(array, field)| array_to_arrow(array, field))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(height));
        batches.push(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?);
    }
    Ok((schema, batches))
}

/// A frame over the batches' buffers.
pub fn batches_to_frame(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<DataFrame> {
    // Polars imports each column as the schema's type without looking: a batch of another
    // type would be read as the wrong layout.
    for batch in batches {
        let fields = batch.schema_ref().fields();
        let same = fields.len() == schema.fields().len()
            && fields.iter().zip(schema.fields()).all(|(a, b)| a.data_type() == b.data_type());
        if !same {
            return Err(Error::invalid("a record batch does not match the schema of its stream"));
        }
    }
    let height: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        // Polars panics on Arrow types it lacks and on malformed type metadata; the types
        // come from clients, so that is an answer for them, not a crash.
        let unsupported =
            |panic: String| Error::invalid(format!("column `{}`: not convertible to Polars: {panic}", field.name()));
        let series = crate::contain::guard(unsupported, || {
            let pfield = field_to_polars(field)?;
            let chunks = batches.iter().map(|b| array_to_polars(b.column(i), &pfield)).collect::<Result<Vec<_>>>()?;
            Ok(if chunks.is_empty() {
                Series::new_empty(pfield.name.clone(), &DataType::from_arrow_field(&pfield))
            } else {
                Series::try_from((&pfield, chunks))?
            })
        })?;
        columns.push(series.into());
    }
    Ok(DataFrame::new(height, columns)?)
}

/// Target size of one record batch on the wire or in a stored file.
pub const BATCH_TARGET_BYTES: usize = 4 << 20;

/// Splits a batch into slices of about `target_bytes` each, compacting string and binary view
/// columns so a slice carries only its own bytes.
///
/// Slicing a view array keeps every data buffer of the original, and IPC writers send those whole;
/// without compaction each of N slices would carry the full column.
pub fn split_batch(batch: &RecordBatch, target_bytes: usize) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let bytes = batch.get_array_memory_size().max(1);
    let parts = bytes.div_ceil(target_bytes.max(1)).clamp(1, rows.max(1));
    if parts == 1 {
        return vec![batch.clone()];
    }
    let per_part = rows.div_ceil(parts);
    let has_views = batch
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), ArrowDataType::Utf8View | ArrowDataType::BinaryView));
    (0..rows)
        .step_by(per_part)
        .map(|offset| {
            let slice = batch.slice(offset, per_part.min(rows - offset));
            if has_views { compact_views(&slice) } else { slice }
        })
        .collect()
}

fn compact_views(batch: &RecordBatch) -> RecordBatch {
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            ArrowDataType::Utf8View => Arc::new(column.as_string_view().gc()) as ArrowArrayRef,
            ArrowDataType::BinaryView => Arc::new(column.as_binary_view().gc()) as ArrowArrayRef,
            _ => column.clone(),
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).expect("same schema and lengths")
}

fn field_to_arrow(field: &PolarsField) -> Result<ArrowField> {
    let exported = pffi::export_field_to_c(field);
    // SAFETY: both structs are the #[repr(C)] ArrowSchema of the C Data Interface.
    let schema: FFI_ArrowSchema = unsafe { std::mem::transmute(exported) };
    Ok(ArrowField::try_from(&schema)?)
}

fn field_to_polars(field: &ArrowField) -> Result<PolarsField> {
    let schema = FFI_ArrowSchema::try_from(field)?;
    // SAFETY: both structs are the #[repr(C)] ArrowSchema of the C Data Interface.
    let schema: pffi::ArrowSchema = unsafe { std::mem::transmute(schema) };
    // SAFETY: the schema was just exported by arrow-rs and is valid.
    let field = unsafe { pffi::import_field_from_c(&schema) }?;
    Ok(field)
}

fn array_to_arrow(array: Box<dyn PolarsArray>, field: &ArrowField) -> Result<ArrowArrayRef> {
    // Null arrays carry no buffers; the two sides disagree on how to say so over FFI.
    if field.data_type() == &ArrowDataType::Null {
        return Ok(Arc::new(arrow::array::NullArray::new(array.len())));
    }
    let exported = pffi::export_array_to_c(array);
    // SAFETY: both structs are the #[repr(C)] ArrowArray of the C Data Interface; ownership of
    // the buffers moves with the struct and its release callback.
    let array: FFI_ArrowArray = unsafe { std::mem::transmute(exported) };
    let schema = FFI_ArrowSchema::try_from(field)?;
    // SAFETY: the array was exported by Polars for this field's type.
    let data = unsafe { arrow::ffi::from_ffi(array, &schema) }?;
    Ok(make_array(data))
}

fn array_to_polars(array: &ArrowArrayRef, field: &PolarsField) -> Result<Box<dyn PolarsArray>> {
    if field.dtype == polars_arrow::datatypes::ArrowDataType::Null {
        return Ok(Box::new(polars_arrow::array::NullArray::new(
            polars_arrow::datatypes::ArrowDataType::Null,
            array.len(),
        )));
    }
    let (array, _schema) = arrow::ffi::to_ffi(&array.to_data())?;
    // SAFETY: both structs are the #[repr(C)] ArrowArray of the C Data Interface.
    let array: pffi::ArrowArray = unsafe { std::mem::transmute(array) };
    // SAFETY: the array was exported by arrow-rs with this field's type.
    let array = unsafe { pffi::import_array_from_c(array, field.dtype.clone()) }
        .map_err(|e| Error::Internal(format!("importing an Arrow array into Polars: {e}")))?;
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn round_trip_keeps_values_and_types() {
        let df = df!(
            "i" => [Some(1i64), None, Some(3)],
            "s" => ["a", "a long string beyond twelve bytes", ""],
            "f" => [1.5f64, f64::NAN, -0.0],
        )
        .unwrap();
        let (schema, batches) = frame_to_batches(&df).unwrap();
        let back = batches_to_frame(&schema, &batches).unwrap();
        assert!(back.equals_missing(&df));
    }

    #[test]
    fn empty_frame_keeps_schema() {
        let df = df!("i" => Vec::<i32>::new()).unwrap();
        let (schema, batches) = frame_to_batches(&df).unwrap();
        assert_eq!(schema.fields().len(), 1);
        let back = batches_to_frame(&schema, &batches).unwrap();
        assert_eq!(back.schema(), df.schema());
    }
}

/// How view types (Utf8View, BinaryView) go to clients: as they are, or as the older
/// offset-based types that some drivers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewTypes {
    /// Send views as they are (no copy).
    #[default]
    View,
    /// Utf8View -> Utf8, BinaryView -> Binary.
    Utf8,
    /// Utf8View -> LargeUtf8, BinaryView -> LargeBinary.
    LargeUtf8,
}

impl ViewTypes {
    /// `view`, `utf8` or `large_utf8`.
    pub fn parse(text: &str) -> Option<ViewTypes> {
        match text.trim().to_ascii_lowercase().as_str() {
            "view" | "keep" => Some(ViewTypes::View),
            "utf8" | "string" => Some(ViewTypes::Utf8),
            "large_utf8" | "large" | "large_string" => Some(ViewTypes::LargeUtf8),
            _ => None,
        }
    }

    fn map_type(self, dtype: &ArrowDataType) -> ArrowDataType {
        use ArrowDataType as T;
        match (self, dtype) {
            (ViewTypes::View, t) => t.clone(),
            (ViewTypes::Utf8, T::Utf8View) => T::Utf8,
            (ViewTypes::Utf8, T::BinaryView) => T::Binary,
            (ViewTypes::LargeUtf8, T::Utf8View) => T::LargeUtf8,
            (ViewTypes::LargeUtf8, T::BinaryView) => T::LargeBinary,
            (_, T::List(f)) => T::List(Arc::new(self.map_field(f))),
            (_, T::LargeList(f)) => T::LargeList(Arc::new(self.map_field(f))),
            (_, T::FixedSizeList(f, n)) => T::FixedSizeList(Arc::new(self.map_field(f)), *n),
            (_, T::Struct(fields)) => T::Struct(fields.iter().map(|f| self.map_field(f)).collect()),
            (_, t) => t.clone(),
        }
    }

    fn map_field(self, field: &ArrowField) -> ArrowField {
        field.clone().with_data_type(self.map_type(field.data_type()))
    }

    /// The schema clients get for a result of `schema`.
    pub fn schema(self, schema: &SchemaRef) -> SchemaRef {
        if self == ViewTypes::View {
            return schema.clone();
        }
        let fields: Vec<ArrowField> = schema.fields().iter().map(|f| self.map_field(f)).collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// `batch` with its columns cast to `schema` (from [`ViewTypes::schema`]).
    pub fn batch(self, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
        if self == ViewTypes::View || batch.schema().fields() == schema.fields() {
            return Ok(batch);
        }
        cast_batch(&batch, schema)
    }
}

/// `batch` with each column cast to the type of the same column of `schema`.
pub fn cast_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
