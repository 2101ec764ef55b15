package convexcdc.spark;

import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.catalyst.expressions.NamedArgumentExpression;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.classic.DataStreamReader;
import org.apache.spark.sql.classic.SparkSession;

import scala.Function1;
import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.BoxedUnit;

/**
 * A test-only stand-in for Databricks' {@code read_files} table-valued function, as the
 * rendered SQL pipeline uses it on the S3/export change feed:
 * {@code STREAM read_files('<dir>/', format => 'parquet', pathGlobFilter => 'batch=*.parquet')}.
 *
 * <p>Why it exists: {@code read_files} is Databricks SQL; Apache Spark has no such function.
 * Its contract the pipeline relies on is "stream every file under the directory once", which
 * is what Spark's own streaming file source does, so the function is that source: the path
 * argument is loaded with the {@code format} given, every other named argument becomes a
 * reader option. It always reads as a stream (Spark does not tell a table function whether
 * {@code STREAM} wraps it); the rendered pipeline only calls it inside {@code STREAM}.
 *
 * <p>Enable with {@code spark.sql.extensions=convexcdc.spark.ReadFilesExtension}.
 */
public final class ReadFilesExtension implements Function1<SparkSessionExtensions, BoxedUnit> {
  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    Function1<Seq<Expression>, LogicalPlan> builder = ReadFilesExtension::streamFiles;
    extensions.injectTableFunction(
        new Tuple3<>(
            new FunctionIdentifier("read_files"),
            new ExpressionInfo(ReadFilesExtension.class.getName(), "read_files"),
            builder));
    return BoxedUnit.UNIT;
  }

  private static LogicalPlan streamFiles(Seq<Expression> arguments) {
    String path = null;
    Map<String, String> options = new LinkedHashMap<>();
    for (Expression argument : CollectionConverters.asJava(arguments)) {
      if (argument instanceof NamedArgumentExpression named) {
        options.put(named.key(), constant(named.value()));
      } else if (path == null) {
        path = constant(argument);
      } else {
        throw new IllegalArgumentException("read_files takes one path, then named options");
      }
    }
    String format = options.remove("format");
    if (path == null || format == null) {
      throw new IllegalArgumentException("read_files needs a path and format => '...'");
    }
    DataStreamReader reader = SparkSession.active().readStream().format(format);
    options.forEach(reader::option);
    return reader.load(path).logicalPlan();
  }

  private static String constant(Expression expression) {
    if (!expression.foldable()) {
      throw new IllegalArgumentException("read_files arguments must be constants: " + expression);
    }
    return String.valueOf(expression.eval(null));
  }
}
