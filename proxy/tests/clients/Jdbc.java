// JDBC (pgjdbc) through the proxy: prepareThreshold=1 switches to named server statements at once.
// Usage: java -cp /usr/share/java/postgresql.jar Jdbc.java PORT APPNAME
import java.sql.*;

public class Jdbc {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/postgres?user=postgres&prepareThreshold=1&ApplicationName=" + a[1];
        try (Connection c = DriverManager.getConnection(url)) {
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 7 /*marker_jdbc*/")) {
                for (int i = 0; i < 4; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) { rs.next(); System.out.println("jdbc " + rs.getInt(1)); }
                }
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                try { s.execute("SELECT 1/0"); } catch (SQLException e) { System.out.println("error " + e.getSQLState()); }
            }
            c.rollback();
        }
    }
}
