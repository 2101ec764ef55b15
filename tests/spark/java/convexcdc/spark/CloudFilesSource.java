package convexcdc.spark;

import org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat;

/**
 * A test-only stand-in for Databricks Auto Loader ({@code format("cloudFiles")}) over
 * parquet files.
 *
 * <p>Why it exists: the rendered Python pipeline for the S3/export change feed reads the
 * published raw change log with Auto Loader, which Apache Spark does not have. Auto Loader's
 * contract the pipeline relies on is "each new file under the directory is read exactly
 * once, in a streaming query". Spark's own streaming file source keeps that contract, so
 * this class only gives Spark's parquet file source the name {@code cloudFiles}. Its
 * {@code cloudFiles.*} options are ignored (the format is always parquet); Spark's own
 * options, such as {@code pathGlobFilter}, apply as usual. The server needs
 * {@code spark.sql.streaming.schemaInference=true}, as Auto Loader infers schemas too.
 *
 * <p>Registered through {@code META-INF/services/org.apache.spark.sql.sources.DataSourceRegister}.
 */
public final class CloudFilesSource extends ParquetFileFormat {
  private static final long serialVersionUID = 1L;

  @Override
  public String shortName() {
    return "cloudFiles";
  }

  @Override
  public String toString() {
    return "cloudFiles (parquet)";
  }
}
